"""The pure ledger engine: applies transfer requests to accounts, one at a time, deterministically.

No I/O, no clock: the caller passes ``now_us``. The ledger writer builds a ``Ledger`` holding just the
rows a batch touches, applies the batch in memory (so a hot account costs no more than a cold one) and
persists the resulting ``BalanceChange``s in one transaction.

Idempotency: every id is remembered with its request and its result, failures included. A retry with
equal fields gets ``exists`` (if it was applied) or the very same failure (if it was not), never a
second application and never a different answer; equal id with different fields gets
``exists_with_different_fields``.
"""

from dataclasses import dataclass, field
from typing import Final

from payplane.ledger.model import (
    AMOUNT_MAX_MINOR,
    BALANCE_MAX_MINOR,
    PENDING_TIMEOUT_MAX_S,
    Account,
    AccountSpec,
    AccountStatus,
    BalanceChange,
    PendingState,
    Transfer,
    TransferKind,
    TransferMode,
    TransferRequest,
)
from payplane.ledger.results import AccountResult, TransferResult

R = TransferResult
_US_PER_S = 1_000_000


@dataclass
class Ledger:
    """In-memory ledger state: accounts, applied transfers, and remembered rejections."""

    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    rejections: dict[str, tuple[TransferRequest, TransferResult]] = field(default_factory=dict)

    # -- accounts -------------------------------------------------------------------------------
    def create_account(self, spec: AccountSpec, now_us: int) -> AccountResult:
        if not spec.id:
            return AccountResult.ID_MUST_NOT_BE_EMPTY
        if spec.flags.debits_must_not_exceed_credits and spec.flags.credits_must_not_exceed_debits:
            return AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if spec.overdraft_limit_minor < 0:
            return AccountResult.OVERDRAFT_LIMIT_MUST_NOT_BE_NEGATIVE
        existing = self.accounts.get(spec.id)
        if existing is not None:
            return AccountResult.EXISTS if existing.spec == spec else AccountResult.EXISTS_WITH_DIFFERENT_FIELDS
        self.accounts[spec.id] = Account(spec=spec, created_at_us=now_us)
        return AccountResult.OK

    # -- transfers ------------------------------------------------------------------------------
    def apply(self, request: TransferRequest, now_us: int) -> tuple[TransferResult, BalanceChange]:
        """Apply one request. The result is always a value; the change says what to persist."""
        change = BalanceChange()
        invalid = _validate(request)
        if invalid is not None:
            return invalid, change  # malformed requests are not remembered: they never had an identity
        seen = self._seen_before(request)
        if seen is not None:
            return seen, change
        if request.mode in _RESOLVING:
            result = self._resolve_pending(request, now_us, change)
        else:
            result = self._move(request, now_us, change)
        if not result.succeeded:
            self.rejections[request.id] = (request, result)
            change.rejection = (request, result)
        return result, change

    def expire(self, pending_id: str, now_us: int) -> BalanceChange | None:
        """Release a pending transfer whose timeout has passed; None if it is not due or not pending."""
        pending = self.transfers.get(pending_id)
        if pending is None or pending.pending_state is not PendingState.PENDING:
            return None
        if pending.expires_at_us is None or now_us < pending.expires_at_us:
            return None
        change = BalanceChange()
        self._release(pending, PendingState.EXPIRED, change)
        return change

    # -- internals ------------------------------------------------------------------------------
    def _seen_before(self, request: TransferRequest) -> TransferResult | None:
        applied = self.transfers.get(request.id)
        if applied is not None:
            return R.EXISTS if applied.request == request else R.EXISTS_WITH_DIFFERENT_FIELDS
        rejected = self.rejections.get(request.id)
        if rejected is not None:
            original, result = rejected
            return result if original == request else R.EXISTS_WITH_DIFFERENT_FIELDS
        return None

    def _move(self, request: TransferRequest, now_us: int, change: BalanceChange) -> TransferResult:
        """A single-phase or pending transfer between two accounts."""
        debit = self.accounts.get(request.debit_account_id)
        credit = self.accounts.get(request.credit_account_id)
        if debit is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        if credit is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        amount_minor = request.amount_minor or 0
        refused = _check_accounts(request, debit, credit) or _check_limits(request.mode, amount_minor, debit, credit)
        if refused is not None:
            return refused
        transfer = Transfer(
            request=request,
            debit_account_id=request.debit_account_id,  # the accounts' ids: they were found by them
            credit_account_id=request.credit_account_id,
            amount_minor=amount_minor,
            currency=request.currency,
            applied_at_us=now_us,
        )
        if request.mode is TransferMode.PENDING:
            transfer.pending_state = PendingState.PENDING
            if request.timeout_s:
                transfer.expires_at_us = now_us + request.timeout_s * _US_PER_S
            debit.debits_pending_minor += amount_minor
            credit.credits_pending_minor += amount_minor
        else:
            _post(debit, credit, amount_minor)
        self.transfers[transfer.id] = transfer
        change.transfer = transfer
        return R.OK

    def _resolve_pending(self, request: TransferRequest, now_us: int, change: BalanceChange) -> TransferResult:
        """Post (fully or in part) or void a pending transfer, at most once."""
        pending = self.transfers.get(request.pending_id)
        refused = _check_pending(request, pending)
        if refused is not None:
            return refused
        assert pending is not None
        if pending.expires_at_us is not None and now_us >= pending.expires_at_us:
            self._release(pending, PendingState.EXPIRED, change)
            return R.EXPIRED
        debit = self.accounts[pending.debit_account_id]
        credit = self.accounts[pending.credit_account_id]
        posting = request.mode is TransferMode.POST_PENDING
        amount_minor = pending.amount_minor if request.amount_minor is None else request.amount_minor
        if posting:
            blocked = _status_refusal(debit) or _status_refusal(credit)
            if blocked is not None:
                return blocked
            if amount_minor > pending.amount_minor:
                return R.EXCEEDS_PENDING_AMOUNT
            if _overflows(debit.debits_posted_minor, amount_minor) or _overflows(
                credit.credits_posted_minor, amount_minor
            ):
                return R.OVERFLOWS_BALANCE
        resolution = Transfer(
            request=request,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount_minor=amount_minor if posting else pending.amount_minor,
            currency=pending.currency,
            applied_at_us=now_us,
        )
        self._release(pending, PendingState.POSTED if posting else PendingState.VOIDED, change)
        if posting:
            _post(debit, credit, amount_minor)
        self.transfers[resolution.id] = resolution
        change.transfer = resolution
        return R.OK

    def _release(self, pending: Transfer, new_state: PendingState, change: BalanceChange) -> None:
        """Take a pending transfer's reservation off both accounts and record how it ended."""
        debit = self.accounts[pending.debit_account_id]
        credit = self.accounts[pending.credit_account_id]
        debit.debits_pending_minor -= pending.amount_minor
        credit.credits_pending_minor -= pending.amount_minor
        pending.pending_state = new_state
        change.pending_resolved = pending


_RESOLVING: Final = frozenset({TransferMode.POST_PENDING, TransferMode.VOID_PENDING})


def _validate(request: TransferRequest) -> TransferResult | None:
    """Checks on the request alone, in precedence order: the first that fails decides the result.

    Precedence: empty id; amount not positive (a post or void may leave it out: the full pending
    amount); amount beyond the maximum; equal accounts (movements); pending id required (posts, voids)
    or not allowed (movements); pending id equal to the id; a timeout on anything but a pending
    transfer; a timeout out of range. Written out rather than table-driven: it runs for every transfer."""
    if not request.id:
        return R.ID_MUST_NOT_BE_EMPTY
    resolving = request.mode in _RESOLVING
    return (
        _amount_refusal(request.amount_minor, resolving)
        or _shape_refusal(request, resolving)
        or _timeout_refusal(request.mode, request.timeout_s)
    )


def _amount_refusal(amount_minor: int | None, resolving: bool) -> TransferResult | None:
    if amount_minor is None:
        return None if resolving else R.AMOUNT_MUST_BE_POSITIVE
    if amount_minor <= 0:
        return R.AMOUNT_MUST_BE_POSITIVE
    return R.AMOUNT_EXCEEDS_MAXIMUM if amount_minor > AMOUNT_MAX_MINOR else None


def _shape_refusal(request: TransferRequest, resolving: bool) -> TransferResult | None:
    if resolving:
        if not request.pending_id:
            return R.PENDING_ID_REQUIRED
    elif request.debit_account_id == request.credit_account_id:
        return R.ACCOUNTS_MUST_BE_DIFFERENT
    elif request.pending_id:
        return R.PENDING_ID_NOT_ALLOWED
    return R.PENDING_ID_MUST_DIFFER if request.pending_id == request.id else None


def _timeout_refusal(mode: TransferMode, timeout_s: int) -> TransferResult | None:
    if not timeout_s:
        return None
    if mode is not TransferMode.PENDING:
        return R.TIMEOUT_RESERVED_FOR_PENDING
    return None if 0 <= timeout_s <= PENDING_TIMEOUT_MAX_S else R.TIMEOUT_OUT_OF_RANGE


def _status_refusal(account: Account) -> TransferResult | None:
    if account.status is AccountStatus.CLOSED:
        return R.ACCOUNT_CLOSED
    if account.status is AccountStatus.FROZEN:
        return R.ACCOUNT_FROZEN
    return None


def _check_accounts(request: TransferRequest, debit: Account, credit: Account) -> TransferResult | None:
    if not (request.currency == debit.spec.currency == credit.spec.currency):
        return R.CURRENCY_MISMATCH
    if debit.status is AccountStatus.ACTIVE and credit.status is AccountStatus.ACTIVE:
        return None
    if request.kind is TransferKind.REVERSAL and credit.status is AccountStatus.FROZEN:
        # returning money that never arrived may reach a frozen account: it cannot leave from there
        return _status_refusal(debit)
    return _status_refusal(debit) or _status_refusal(credit)


def _overflows(balance_minor: int, amount_minor: int) -> bool:
    return balance_minor + amount_minor > BALANCE_MAX_MINOR


def _check_limits(mode: TransferMode, amount_minor: int, debit: Account, credit: Account) -> TransferResult | None:
    """Overflow first, then the accounts' balance limits (pending reservations count as spent)."""
    if mode is TransferMode.PENDING:
        debit_grows, credit_grows = debit.debits_pending_minor, credit.credits_pending_minor
    else:
        debit_grows, credit_grows = debit.debits_posted_minor, credit.credits_posted_minor
    if max(debit_grows, credit_grows) + amount_minor > BALANCE_MAX_MINOR:
        return R.OVERFLOWS_BALANCE
    debit_flags, credit_flags = debit.spec.flags, credit.spec.flags
    if debit_flags.debits_must_not_exceed_credits:
        committed = debit.debits_pending_minor + debit.debits_posted_minor + amount_minor
        if committed > debit.credits_posted_minor + debit.spec.overdraft_limit_minor:
            return R.INSUFFICIENT_FUNDS
    if credit_flags.credits_must_not_exceed_debits:
        committed = credit.credits_pending_minor + credit.credits_posted_minor + amount_minor
        if committed > credit.debits_posted_minor:
            return R.EXCEEDS_DEBITS
    return None


_RESOLVED_PENDING: dict[PendingState, TransferResult] = {
    PendingState.POSTED: R.ALREADY_POSTED,
    PendingState.VOIDED: R.ALREADY_VOIDED,
    PendingState.EXPIRED: R.EXPIRED,
}


def _check_pending(request: TransferRequest, pending: Transfer | None) -> TransferResult | None:
    if pending is None:
        return R.PENDING_NOT_FOUND
    if pending.pending_state is None:
        return R.PENDING_TRANSFER_NOT_PENDING
    if pending.pending_state in _RESOLVED_PENDING:
        return _RESOLVED_PENDING[pending.pending_state]
    named = [
        (request.debit_account_id, pending.debit_account_id),
        (request.credit_account_id, pending.credit_account_id),
        (request.currency, pending.currency),
    ]
    if any(given and given != actual for given, actual in named):
        return R.ACCOUNTS_DIFFER_FROM_PENDING
    return None


def _post(debit: Account, credit: Account, amount_minor: int) -> None:
    debit.debits_posted_minor += amount_minor
    credit.credits_posted_minor += amount_minor
