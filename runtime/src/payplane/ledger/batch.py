"""One batch of ledger commands, decided in memory: pure, so it is tested without PostgreSQL or Kafka.

The writer decodes a batch's records into commands, asks ``ids_to_load`` what to fetch, loads a
``Ledger`` with exactly those rows, and calls ``apply_batch``. The ``AppliedBatch`` holds everything the
store persists in one transaction: new accounts, balance changes (refusals included), the outcome
messages for the payment worker, and the legs forwarded to other partitions (both through the outbox).
Commands addressed to the wrong partition come back as ``misrouted`` for the dead-letter topic: a writer
never touches another partition's accounts.
"""

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from payplane.ledger import legs
from payplane.ledger.codec import RequestDecodeError
from payplane.ledger.engine import Ledger
from payplane.ledger.model import Account, AccountSpec, BalanceChange, TransferMode, TransferRequest
from payplane.ledger.results import TransferResult
from payplane_contracts.ledger_messages import TransferOutcome
from payplane_contracts.partitions import transit_account_id

Command = AccountSpec | TransferRequest
PartitionOf = Callable[[str], int]


def ids_to_load(
    commands: list[Command], partition: int, *, transit_partitions: Collection[int] = ()
) -> tuple[set[str], set[str]]:
    """(account ids, transfer ids) a batch may consult; pending transfers' accounts load in a second step.
    The transit accounts of ``transit_partitions`` load too (in the currencies of the commands): a writer
    that owns them applies the legs its transfers send there in the same batch (``split_forwards``)."""
    account_ids: set[str] = set()
    transfer_ids: set[str] = set()
    currencies: set[str] = set()
    for command in commands:
        if isinstance(command, AccountSpec):
            account_ids.add(command.id)
            continue
        transfer_ids.add(command.id)
        if command.pending_id:
            transfer_ids.add(command.pending_id)
        account_ids.add(command.debit_account_id)
        account_ids.add(command.credit_account_id)
        currencies.add(command.currency)
    partitions = {partition, *transit_partitions}
    account_ids.update(transit_account_id(currency, p) for currency in currencies if currency for p in partitions)
    account_ids.discard("")
    return account_ids, transfer_ids


def pending_ids_of(commands: list[Command]) -> set[str]:
    """The holds a batch posts or voids: what it must look up even when it assumes its own ids are new."""
    return {c.pending_id for c in commands if isinstance(c, TransferRequest) and c.pending_id}


@dataclass(frozen=True)
class Forward:
    """A leg for another partition's writer, sent through the outbox."""

    partition: int
    request: TransferRequest


def split_forwards(
    forwards: list[Forward], ledger: Ledger, owned: Collection[int]
) -> tuple[list[Forward], list[Forward]]:
    """(forwards to send through the outbox, forwards to apply in this batch). A leg can be applied here
    when its partition is one the writer owns and both of its accounts are in ``ledger`` (loaded with the
    batch; otherwise the leg's own partition's batch loads them, so it goes through the outbox as
    before). Either way the leg is applied exactly once: it is made once, when its first leg applies."""
    remote: list[Forward] = []
    local: list[Forward] = []
    accounts = ledger.accounts
    for forward in forwards:
        request = forward.request
        here = (
            forward.partition in owned
            and request.debit_account_id in accounts
            and request.credit_account_id in accounts
        )
        (local if here else remote).append(forward)
    return remote, local


@dataclass(frozen=True)
class Misrouted:
    command: Command
    reason: str


@dataclass
class AppliedBatch:
    new_accounts: list[Account] = field(default_factory=list)
    changes: list[BalanceChange] = field(default_factory=list)
    outcomes: list[TransferOutcome] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)

    def extend(self, later: "AppliedBatch") -> None:
        """Append what a later part of the same batch did (commands are applied in order)."""
        self.new_accounts.extend(later.new_accounts)
        self.changes.extend(later.changes)
        self.outcomes.extend(later.outcomes)
        self.forwards.extend(later.forwards)
        self.misrouted.extend(later.misrouted)


@dataclass
class _BatchContext:
    ledger: Ledger
    partition: int
    partition_of: PartitionOf
    now_us: int
    applied: AppliedBatch

    def is_local(self, account_id: str) -> bool:
        return self.partition_of(account_id) == self.partition

    def is_remote(self, account_id: str) -> bool:
        """Named and not on this partition (an empty id is left to the engine to refuse)."""
        return bool(account_id) and self.partition_of(account_id) != self.partition

    def outcome(self, transfer_id: str, result: str, payment_ref: str) -> None:
        self.applied.outcomes.append(TransferOutcome(transfer_id, result, self.partition, self.now_us, payment_ref))

    def ensure_transit(self, currency: str) -> None:
        spec = legs.transit_spec(currency, self.partition)
        if spec.id not in self.ledger.accounts and self.ledger.create_account(spec, self.now_us).succeeded:
            self.applied.new_accounts.append(self.ledger.accounts[spec.id])

    def apply(self, request: TransferRequest) -> TransferResult:
        result, change = self.ledger.apply(request, self.now_us)
        self.applied.changes.append(change)
        return result


def apply_batch(
    ledger: Ledger, commands: list[Command], *, partition: int, partition_of: PartitionOf, now_us: int
) -> AppliedBatch:
    """Apply commands in order (the order Kafka delivered them for this partition)."""
    ctx = _BatchContext(ledger, partition, partition_of, now_us, AppliedBatch())
    for command in commands:
        if isinstance(command, AccountSpec):
            _create_account(ctx, command)
        else:
            _route_transfer(ctx, command)
    return ctx.applied


def _create_account(ctx: _BatchContext, spec: AccountSpec) -> None:
    if spec.id and not ctx.is_local(spec.id):
        ctx.applied.misrouted.append(
            Misrouted(spec, f"account {spec.id} belongs to partition {ctx.partition_of(spec.id)}")
        )
        return
    if ctx.ledger.create_account(spec, ctx.now_us).value == "ok":
        ctx.applied.new_accounts.append(ctx.ledger.accounts[spec.id])


def _route_transfer(ctx: _BatchContext, request: TransferRequest) -> None:
    resolving = request.mode in (TransferMode.POST_PENDING, TransferMode.VOID_PENDING)
    if resolving:
        _resolve(ctx, request)
    elif legs.is_generated_leg(request):
        _apply_incoming_leg(ctx, request)
    elif ctx.is_remote(request.debit_account_id):
        owner = ctx.partition_of(request.debit_account_id)
        ctx.applied.misrouted.append(Misrouted(request, f"debit account belongs to partition {owner}"))
    elif ctx.is_remote(request.credit_account_id):
        _apply_first_leg(ctx, request)
    else:
        result = ctx.apply(request)
        ctx.outcome(request.id, result, request.payment_ref)  # a StrEnum is its value


def _apply_first_leg(ctx: _BatchContext, request: TransferRequest) -> None:
    """Debtor → transit here; a posted first leg forwards the credit leg, whose writer reports the outcome."""
    if request.currency:
        ctx.ensure_transit(request.currency)
    first = legs.first_leg(request, ctx.partition)
    result = ctx.apply(first)
    if request.mode is TransferMode.POSTED and result.succeeded:
        if result is TransferResult.OK:
            _forward_credit_leg(ctx, request.id, first, request.amount_minor or 0)
        return
    ctx.outcome(request.id, result, request.payment_ref)  # a StrEnum is its value


def _resolve(ctx: _BatchContext, request: TransferRequest) -> None:
    """Post or void a hold; posting a cross-partition hold forwards the posted amount as a credit leg."""
    pending = ctx.ledger.transfers.get(request.pending_id)
    result = ctx.apply(request)
    forwarding = pending is not None and bool(pending.request.forward_to)
    if forwarding and request.mode is TransferMode.POST_PENDING and result.succeeded:
        if result is TransferResult.OK and pending is not None:
            posted = ctx.ledger.transfers[request.id].amount_minor
            _forward_credit_leg(ctx, request.id, pending.request, posted)
        return
    ctx.outcome(request.id, result, request.payment_ref)  # a StrEnum is its value


def _forward_credit_leg(ctx: _BatchContext, resolved_id: str, first: TransferRequest, amount_minor: int) -> None:
    creditor_partition = ctx.partition_of(first.forward_to)
    ctx.applied.forwards.append(
        Forward(creditor_partition, legs.credit_leg(resolved_id, first, amount_minor, creditor_partition))
    )


def _apply_incoming_leg(ctx: _BatchContext, request: TransferRequest) -> None:
    """A credit leg or a reversal arriving from another partition: transit here → local account."""
    if not ctx.is_local(request.credit_account_id):
        owner = ctx.partition_of(request.credit_account_id)
        ctx.applied.misrouted.append(Misrouted(request, f"credit account belongs to partition {owner}"))
        return
    ctx.ensure_transit(request.currency)
    result = ctx.apply(request)
    origin = legs.origin_id(request.id)
    if result.succeeded:
        is_reversal = request.kind.value == "reversal"
        ctx.outcome(origin, request.user_data if is_reversal else TransferResult.OK.value, request.payment_ref)
    elif request.reverse_to:
        debtor_partition = ctx.partition_of(request.reverse_to)
        ctx.applied.forwards.append(Forward(debtor_partition, legs.reversal(request, result.value, debtor_partition)))
    else:
        # a reversal refused (the debtor's account was closed meanwhile): the money stays in transit,
        # visible to `ledger verify`, and the outcome says so
        ctx.outcome(origin, f"reversal_refused:{result.value}", request.payment_ref)


__all__ = [
    "AppliedBatch",
    "Command",
    "Forward",
    "Misrouted",
    "RequestDecodeError",
    "apply_batch",
    "ids_to_load",
    "pending_ids_of",
    "split_forwards",
]
