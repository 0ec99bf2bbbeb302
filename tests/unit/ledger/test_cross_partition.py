"""Cross-partition transfers, simulated over several in-memory partitions with the real batch logic:
two legs through transit accounts, reversals, holds, replays, misrouting, and Σ = 0 at every step."""

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from payplane.ledger.batch import Command, Forward, apply_batch, split_forwards
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, AccountStatus, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import TransferOutcome
from payplane_contracts.partitions import TRANSIT_PREFIX, ledger_partition_for_account

PARTITIONS = 4
CUSTOMER = AccountFlags(debits_must_not_exceed_credits=True)


def partition_of(account_id: str) -> int:
    return ledger_partition_for_account(account_id, PARTITIONS)


def _names_on(partition: int, count: int) -> list[str]:
    names = (f"acct-{i}" for i in range(10_000))
    return [n for n in names if partition_of(n) == partition][:count]


A, A2 = _names_on(0, 2)  # two accounts on partition 0
(B,) = _names_on(1, 1)
(C,) = _names_on(2, 1)
WORLD = _names_on(3, 1)[0]


@dataclass
class Cluster:
    ledgers: dict[int, Ledger] = field(default_factory=lambda: {p: Ledger() for p in range(PARTITIONS)})
    outcomes: list[TransferOutcome] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)
    queue: deque[tuple[int, Command]] = field(default_factory=deque)
    delivered: list[tuple[int, Command]] = field(default_factory=list)

    def send(self, command: Command, partition: int | None = None) -> None:
        if partition is None:
            account = command.id if isinstance(command, AccountSpec) else command.debit_account_id
            partition = partition_of(account)
        self.queue.append((partition, command))

    def drain(self, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if not self.queue:
                return
            partition, command = self.queue.popleft()
            self.delivered.append((partition, command))
            applied = apply_batch(
                self.ledgers[partition],
                [command],
                partition=partition,
                partition_of=partition_of,
                now_us=len(self.delivered),
            )
            self.outcomes += applied.outcomes
            self.misrouted += [m.reason for m in applied.misrouted]
            for forward in applied.forwards:
                self.queue.append((forward.partition, forward.request))
            self.assert_zero_sum()
        raise AssertionError("the cluster did not quiesce")

    def redeliver_everything(self) -> None:
        self.queue.extend(self.delivered)
        self.delivered = []
        self.drain()

    def account(self, account_id: str):  # type: ignore[no-untyped-def]
        return self.ledgers[partition_of(account_id)].accounts[account_id]

    def balance(self, account_id: str) -> int:
        return int(self.account(account_id).posted_balance_minor)

    def in_transit_minor(self) -> int:
        return sum(
            a.posted_balance_minor
            for ledger in self.ledgers.values()
            for a in ledger.accounts.values()
            if a.id.startswith(TRANSIT_PREFIX)
        )

    def assert_zero_sum(self) -> None:
        accounts = [a for ledger in self.ledgers.values() for a in ledger.accounts.values()]
        assert sum(a.debits_posted_minor for a in accounts) == sum(a.credits_posted_minor for a in accounts)
        assert sum(a.debits_pending_minor for a in accounts) == sum(a.credits_pending_minor for a in accounts)

    def final_outcome(self, transfer_id: str) -> str:
        results = {o.result for o in self.outcomes if o.transfer_id == transfer_id}
        assert len(results) == 1, f"{transfer_id}: outcomes {results}"
        return results.pop()


def _funded_cluster() -> Cluster:
    cluster = Cluster()
    cluster.send(AccountSpec(WORLD, "EUR", "rail", AccountFlags(internal=True)))
    for name in (A, A2, B, C):
        cluster.send(AccountSpec(name, "EUR", name, CUSTOMER))
    cluster.drain()
    for name in (A, A2):
        cluster.send(TransferRequest(f"fund-{name}", TransferMode.POSTED, WORLD, name, 1000, "EUR"))
    cluster.drain()
    return cluster


def _pay(tid: str, debit: str, credit: str, amount: int, mode: TransferMode = TransferMode.POSTED) -> TransferRequest:
    return TransferRequest(tid, mode, debit, credit, amount, "EUR", payment_ref=f"pi_{tid}")


def test_a_cross_partition_transfer_completes_in_two_legs() -> None:
    cluster = _funded_cluster()
    cluster.send(_pay("p1", A, B, 300))
    cluster.drain()
    assert cluster.balance(A) == 700
    assert cluster.balance(B) == 300
    assert cluster.in_transit_minor() == 0
    assert cluster.final_outcome("p1") == "ok"
    assert [o.payment_ref for o in cluster.outcomes if o.transfer_id == "p1"] == ["pi_p1"]


def test_a_refused_credit_leg_is_reversed_and_reported() -> None:
    cluster = _funded_cluster()
    cluster.account(B).status = AccountStatus.FROZEN
    cluster.send(_pay("p1", A, B, 300))
    cluster.drain()
    assert cluster.balance(A) == 1000, "the money came back"
    assert cluster.balance(B) == 0
    assert cluster.in_transit_minor() == 0
    assert cluster.final_outcome("p1") == "account_frozen"


def test_a_missing_creditor_is_reversed() -> None:
    cluster = _funded_cluster()
    (ghost,) = _names_on(2, 3)[-1:]
    cluster.send(_pay("p1", A, ghost, 300))
    cluster.drain()
    assert cluster.balance(A) == 1000
    assert cluster.final_outcome("p1") == "credit_account_not_found"


def test_insufficient_funds_stop_at_the_first_leg() -> None:
    cluster = _funded_cluster()
    cluster.send(_pay("p1", A, B, 5000))
    cluster.drain()
    assert cluster.final_outcome("p1") == "insufficient_funds"
    assert cluster.in_transit_minor() == 0
    assert not cluster.ledgers[1].transfers, "nothing reached the creditor's partition"


def test_a_cross_partition_hold_posts_in_part_and_the_rest_is_released() -> None:
    cluster = _funded_cluster()
    cluster.send(_pay("auth", A, C, 600, TransferMode.PENDING))
    cluster.drain()
    assert cluster.final_outcome("auth") == "ok"
    assert cluster.account(A).debits_pending_minor == 600
    cluster.send(
        TransferRequest("cap", TransferMode.POST_PENDING, pending_id="auth", amount_minor=250), partition_of(A)
    )
    cluster.drain()
    assert cluster.final_outcome("cap") == "ok"
    assert cluster.balance(A) == 750
    assert cluster.account(A).debits_pending_minor == 0
    assert cluster.balance(C) == 250
    assert cluster.in_transit_minor() == 0


def test_a_cross_partition_hold_can_be_voided() -> None:
    cluster = _funded_cluster()
    cluster.send(_pay("auth", A, C, 600, TransferMode.PENDING))
    cluster.send(TransferRequest("void", TransferMode.VOID_PENDING, pending_id="auth"), partition_of(A))
    cluster.drain()
    assert cluster.final_outcome("void") == "ok"
    assert cluster.balance(A) == 1000
    assert cluster.account(A).debits_pending_minor == 0
    assert cluster.balance(C) == 0


def test_redelivering_every_leg_moves_nothing_twice() -> None:
    cluster = _funded_cluster()
    cluster.account(C).status = AccountStatus.FROZEN
    cluster.send(_pay("p1", A, B, 300))
    cluster.send(_pay("p2", A2, C, 100))  # reversed
    cluster.drain()
    before = {n: cluster.balance(n) for n in (A, A2, B, C)}
    cluster.redeliver_everything()
    assert {n: cluster.balance(n) for n in (A, A2, B, C)} == before
    assert cluster.in_transit_minor() == 0
    assert {o.result for o in cluster.outcomes if o.transfer_id == "p1"} <= {"ok", "exists"}
    assert {o.result for o in cluster.outcomes if o.transfer_id == "p2"} == {"account_frozen"}


def test_misrouted_commands_are_not_applied() -> None:
    cluster = _funded_cluster()
    cluster.send(_pay("p1", A, B, 300), partition=partition_of(B))
    cluster.send(AccountSpec(C + "-x", "EUR", "x"), partition=(partition_of(C + "-x") + 1) % PARTITIONS)
    cluster.drain()
    assert len(cluster.misrouted) == 2
    assert cluster.balance(A) == 1000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, A2, B, C]), st.sampled_from([A, A2, B, C, WORLD]), st.integers(1, 700), st.booleans()
        ),
        min_size=1,
        max_size=25,
    ),
    st.sets(st.sampled_from([A, A2, B, C])),
)
def test_random_traffic_settles_with_every_transfer_decided_once(
    transfers: list[tuple[str, str, int, bool]], frozen: set[str]
) -> None:
    cluster = _funded_cluster()
    for name in frozen:
        cluster.account(name).status = AccountStatus.FROZEN
    sent = []
    for i, (debit, credit, amount, replay) in enumerate(transfers):
        if debit == credit:
            continue
        request = _pay(f"r{i}", debit, credit, amount)
        sent.append(request.id)
        cluster.send(request)
        if replay:
            cluster.send(request)
    cluster.drain()
    assert cluster.in_transit_minor() == 0, "money stuck in transit after quiescence"
    for transfer_id in sent:
        results = {o.result for o in cluster.outcomes if o.transfer_id == transfer_id} - {"exists"}
        assert len(results) == 1, f"{transfer_id} decided as {results}"


def test_split_forwards_keeps_here_only_legs_for_owned_partitions_whose_accounts_are_loaded() -> None:
    ledger = Ledger()
    for spec in (
        AccountSpec(B, "EUR", "b"),
        AccountSpec("~transit:EUR:1", "EUR", "transit", AccountFlags(internal=True)),
    ):
        ledger.create_account(spec, 1)
    leg_to_b = Forward(1, TransferRequest("x~1", TransferMode.POSTED, "~transit:EUR:1", B, 5, "EUR"))
    leg_to_unloaded = Forward(1, TransferRequest("y~1", TransferMode.POSTED, "~transit:EUR:1", "elsewhere", 5, "EUR"))
    leg_to_c = Forward(2, TransferRequest("z~2", TransferMode.POSTED, "~transit:EUR:2", C, 5, "EUR"))

    remote, local = split_forwards([leg_to_b, leg_to_unloaded, leg_to_c], ledger, owned=[0, 1])

    assert local == [leg_to_b]
    assert remote == [leg_to_unloaded, leg_to_c]
    assert split_forwards([leg_to_b], ledger, owned=[0]) == ([leg_to_b], [])
