"""Stateful property test: random transfers, holds, posts, voids, expiries and retries never break
the ledger's invariants (double entry, balances = Σ entries, limits, at-most-once resolution)."""

from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from payplane.ledger.engine import Ledger
from payplane.ledger.model import (
    AccountFlags,
    AccountSpec,
    EntrySide,
    PendingState,
    TransferMode,
    TransferRequest,
)
from payplane.ledger.results import AccountResult, TransferResult

ACCOUNTS = {
    "world-eur": AccountSpec("world-eur", "EUR", "rail", AccountFlags(internal=True)),
    "a": AccountSpec("a", "EUR", "a", AccountFlags(debits_must_not_exceed_credits=True)),
    "b": AccountSpec("b", "EUR", "b", AccountFlags(debits_must_not_exceed_credits=True), overdraft_limit_minor=100),
    "c": AccountSpec("c", "EUR", "c", AccountFlags(credits_must_not_exceed_debits=True)),
    "world-jpy": AccountSpec("world-jpy", "JPY", "rail", AccountFlags(internal=True)),
    "d": AccountSpec("d", "JPY", "d", AccountFlags(debits_must_not_exceed_credits=True)),
}
account_ids = st.sampled_from([*ACCOUNTS, "ghost"])
amounts = st.integers(min_value=-5, max_value=2_000)
S = 1_000_000


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.now_us = 0
        self.entry_sums: dict[tuple[str, EntrySide], int] = defaultdict(int)
        self.requests: list[TransferRequest] = []
        self.answers: dict[str, TransferResult] = {}
        self.resolutions: dict[str, int] = defaultdict(int)
        self.counter = 0
        for spec in ACCOUNTS.values():
            assert self.ledger.create_account(spec, 0) is AccountResult.OK

    def _next_id(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def _submit(self, request: TransferRequest) -> TransferResult:
        result, change = self.ledger.apply(request, self.now_us)
        for entry in change.entries:
            self.entry_sums[(entry.account_id, entry.side)] += entry.amount_minor
        if change.pending_resolved is not None:
            self.resolutions[change.pending_resolved.id] += 1
        if result not in (TransferResult.EXISTS, TransferResult.EXISTS_WITH_DIFFERENT_FIELDS) and request.id:
            self.answers.setdefault(request.id, result)
        self.requests.append(request)
        return result

    @rule(
        debit=account_ids,
        credit=account_ids,
        amount=amounts,
        pending=st.booleans(),
        timeout_s=st.sampled_from([0, 0, 5, 60]),
        currency=st.sampled_from(["EUR", "EUR", "JPY"]),
    )
    def transfer(self, debit: str, credit: str, amount: int, pending: bool, timeout_s: int, currency: str) -> None:
        self._submit(
            TransferRequest(
                id=self._next_id(),
                mode=TransferMode.PENDING if pending else TransferMode.POSTED,
                debit_account_id=debit,
                credit_account_id=credit,
                amount_minor=amount,
                currency=currency,
                timeout_s=timeout_s if pending else 0,
            )
        )

    @rule(data=st.data(), post=st.booleans(), partial=st.integers(min_value=1, max_value=1_500))
    def resolve(self, data: st.DataObject, post: bool, partial: int | None) -> None:
        holds = [t for t in self.ledger.transfers.values() if t.pending_state is not None]
        if not holds:
            return
        hold = data.draw(st.sampled_from(holds))
        amount = data.draw(st.sampled_from([None, partial]))
        self._submit(
            TransferRequest(
                id=self._next_id(),
                mode=TransferMode.POST_PENDING if post else TransferMode.VOID_PENDING,
                pending_id=hold.id,
                amount_minor=amount if post else None,
            )
        )

    @rule(data=st.data())
    def retry_something(self, data: st.DataObject) -> None:
        if not self.requests:
            return
        request = data.draw(st.sampled_from(self.requests))
        result = self._submit(request)
        first = self.answers.get(request.id)
        if first is not None and first.succeeded:
            assert result is TransferResult.EXISTS
        elif first is not None:
            assert result is first, "a replay must give the same answer"

    @rule(seconds=st.integers(min_value=1, max_value=40))
    def time_passes(self, seconds: int) -> None:
        self.now_us += seconds * S
        for transfer_id in list(self.ledger.transfers):
            change = self.ledger.expire(transfer_id, self.now_us)
            if change is not None and change.pending_resolved is not None:
                self.resolutions[change.pending_resolved.id] += 1

    @invariant()
    def double_entry_holds_per_currency(self) -> None:
        for currency in ("EUR", "JPY"):
            accounts = [a for a in self.ledger.accounts.values() if a.currency == currency]
            assert sum(a.debits_posted_minor for a in accounts) == sum(a.credits_posted_minor for a in accounts)
            assert sum(a.debits_pending_minor for a in accounts) == sum(a.credits_pending_minor for a in accounts)

    @invariant()
    def posted_balances_are_the_sum_of_entries(self) -> None:
        for account in self.ledger.accounts.values():
            assert account.debits_posted_minor == self.entry_sums[(account.id, EntrySide.DEBIT)]
            assert account.credits_posted_minor == self.entry_sums[(account.id, EntrySide.CREDIT)]

    @invariant()
    def limits_hold_and_nothing_is_negative(self) -> None:
        for account in self.ledger.accounts.values():
            assert min(account.balances()) >= 0
            flags = account.spec.flags
            if flags.debits_must_not_exceed_credits:
                assert (
                    account.debits_pending_minor + account.debits_posted_minor
                    <= account.credits_posted_minor + account.spec.overdraft_limit_minor
                )
            if flags.credits_must_not_exceed_debits:
                assert account.credits_pending_minor + account.credits_posted_minor <= account.debits_posted_minor

    @invariant()
    def pending_transfers_resolve_at_most_once(self) -> None:
        assert all(count <= 1 for count in self.resolutions.values())
        open_holds = [t for t in self.ledger.transfers.values() if t.pending_state is PendingState.PENDING]
        for account in self.ledger.accounts.values():
            held = sum(t.amount_minor for t in open_holds if t.debit_account_id == account.id)
            assert account.debits_pending_minor == held


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedgerInvariants = LedgerMachine.TestCase
