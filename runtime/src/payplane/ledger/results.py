"""The outcome of applying one transfer: a value, never an exception.

Members are listed in precedence order (the order the engine checks them), so the first failing check
decides the result and equal inputs always give equal results. ``ok`` and ``exists`` are successes:
``exists`` answers a retry of a transfer that was already applied with the same fields.
"""

from enum import StrEnum


class TransferResult(StrEnum):
    OK = "ok"
    # -- the request itself is malformed
    ID_MUST_NOT_BE_EMPTY = "id_must_not_be_empty"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    AMOUNT_EXCEEDS_MAXIMUM = "amount_exceeds_maximum"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    PENDING_ID_REQUIRED = "pending_id_required"
    PENDING_ID_NOT_ALLOWED = "pending_id_not_allowed"
    PENDING_ID_MUST_DIFFER = "pending_id_must_differ"
    TIMEOUT_RESERVED_FOR_PENDING = "timeout_reserved_for_pending"
    TIMEOUT_OUT_OF_RANGE = "timeout_out_of_range"
    # -- idempotency: the id was seen before
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    # -- two-phase: the pending transfer a post or void refers to
    PENDING_NOT_FOUND = "pending_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    ALREADY_POSTED = "already_posted"
    ALREADY_VOIDED = "already_voided"
    EXPIRED = "expired"
    EXCEEDS_PENDING_AMOUNT = "exceeds_pending_amount"
    ACCOUNTS_DIFFER_FROM_PENDING = "accounts_differ_from_pending"
    # -- the accounts
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_FROZEN = "account_frozen"
    # -- balances
    OVERFLOWS_BALANCE = "overflows_balance"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    EXCEEDS_DEBITS = "exceeds_debits"

    @property
    def succeeded(self) -> bool:
        """True when the transfer is (now or already) applied: callers treat ``exists`` like ``ok``."""
        return self in (TransferResult.OK, TransferResult.EXISTS)


class AccountResult(StrEnum):
    OK = "ok"
    ID_MUST_NOT_BE_EMPTY = "id_must_not_be_empty"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    OVERDRAFT_LIMIT_MUST_NOT_BE_NEGATIVE = "overdraft_limit_must_not_be_negative"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"

    @property
    def succeeded(self) -> bool:
        return self in (AccountResult.OK, AccountResult.EXISTS)
