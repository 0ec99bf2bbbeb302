"""Every result of the pure ledger engine, one example each, plus the idempotency contract."""

import pytest

from payplane.ledger.engine import Ledger
from payplane.ledger.model import (
    AMOUNT_MAX_MINOR,
    BALANCE_MAX_MINOR,
    AccountFlags,
    AccountSpec,
    AccountStatus,
    PendingState,
    TransferMode,
    TransferRequest,
)
from payplane.ledger.results import AccountResult, TransferResult

R = TransferResult
M = TransferMode
S = 1_000_000  # microseconds per second
CUSTOMER = AccountFlags(debits_must_not_exceed_credits=True)


def _ledger() -> Ledger:
    ledger = Ledger()
    for spec in [
        AccountSpec("world", "EUR", "rail", AccountFlags(internal=True)),
        AccountSpec("alice", "EUR", "alice", CUSTOMER),
        AccountSpec("bob", "EUR", "bob", CUSTOMER, overdraft_limit_minor=50),
        AccountSpec("loan", "EUR", "bank", AccountFlags(credits_must_not_exceed_debits=True)),
        AccountSpec("yen", "JPY", "carol"),
    ]:
        assert ledger.create_account(spec, now_us=0) is AccountResult.OK
    assert ledger.apply(_move("fund-alice", "world", "alice", 1000), 0)[0] is R.OK
    return ledger


def _move(tid: str, debit: str, credit: str, amount: int | None, mode: M = M.POSTED, **kw: object) -> TransferRequest:
    return TransferRequest(
        id=tid,
        mode=mode,
        debit_account_id=debit,
        credit_account_id=credit,
        amount_minor=amount,
        currency=str(kw.pop("currency", "EUR")),
        **kw,
    )  # type: ignore[arg-type]


def _resolve(tid: str, pending_id: str, mode: M, amount: int | None = None) -> TransferRequest:
    return TransferRequest(id=tid, mode=mode, pending_id=pending_id, amount_minor=amount)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (_move("", "alice", "bob", 1), R.ID_MUST_NOT_BE_EMPTY),
        (_move("t", "alice", "bob", 0), R.AMOUNT_MUST_BE_POSITIVE),
        (_move("t", "alice", "bob", -5), R.AMOUNT_MUST_BE_POSITIVE),
        (_move("t", "alice", "bob", None), R.AMOUNT_MUST_BE_POSITIVE),
        (_move("t", "alice", "bob", AMOUNT_MAX_MINOR + 1), R.AMOUNT_EXCEEDS_MAXIMUM),
        (_move("t", "alice", "alice", 1), R.ACCOUNTS_MUST_BE_DIFFERENT),
        (_resolve("t", "", M.POST_PENDING), R.PENDING_ID_REQUIRED),
        (_move("t", "alice", "bob", 1, pending_id="p"), R.PENDING_ID_NOT_ALLOWED),
        (_resolve("t", "t", M.VOID_PENDING), R.PENDING_ID_MUST_DIFFER),
        (_move("t", "alice", "bob", 1, timeout_s=5), R.TIMEOUT_RESERVED_FOR_PENDING),
        (_move("t", "alice", "bob", 1, M.PENDING, timeout_s=-1), R.TIMEOUT_OUT_OF_RANGE),
        (_move("t", "nobody", "bob", 1), R.DEBIT_ACCOUNT_NOT_FOUND),
        (_move("t", "alice", "nobody", 1), R.CREDIT_ACCOUNT_NOT_FOUND),
        (_move("t", "alice", "yen", 1), R.CURRENCY_MISMATCH),
        (_move("t", "alice", "bob", 1, currency="USD"), R.CURRENCY_MISMATCH),
        (_move("t", "alice", "bob", 1001), R.INSUFFICIENT_FUNDS),
        (_move("t", "alice", "loan", 1), R.EXCEEDS_DEBITS),
        (_resolve("t", "missing", M.POST_PENDING), R.PENDING_NOT_FOUND),
        (_resolve("t", "fund-alice", M.POST_PENDING), R.PENDING_TRANSFER_NOT_PENDING),
    ],
)
def test_each_refusal(request_: TransferRequest, expected: TransferResult) -> None:
    ledger = _ledger()
    before = {a.id: a.balances() for a in ledger.accounts.values()}
    result, change = ledger.apply(request_, now_us=1)
    assert result is expected
    assert not result.succeeded
    assert change.entries == []
    assert {a.id: a.balances() for a in ledger.accounts.values()} == before, "a refusal moved money"


def test_overdraft_limit_allows_going_below_zero_up_to_the_limit() -> None:
    ledger = _ledger()
    assert ledger.apply(_move("t1", "bob", "world", 50), 1)[0] is R.OK
    assert ledger.apply(_move("t2", "bob", "world", 1), 1)[0] is R.INSUFFICIENT_FUNDS
    assert ledger.accounts["bob"].posted_balance_minor == -50


def test_frozen_and_closed_accounts_refuse_movements() -> None:
    ledger = _ledger()
    ledger.accounts["bob"].status = AccountStatus.FROZEN
    assert ledger.apply(_move("t1", "alice", "bob", 1), 1)[0] is R.ACCOUNT_FROZEN
    ledger.accounts["bob"].status = AccountStatus.CLOSED
    assert ledger.apply(_move("t2", "alice", "bob", 1), 1)[0] is R.ACCOUNT_CLOSED


def test_overflow_is_refused_not_wrapped() -> None:
    ledger = _ledger()
    ledger.accounts["world"].debits_posted_minor = BALANCE_MAX_MINOR - 10
    assert ledger.apply(_move("t", "world", "bob", 11), 1)[0] is R.OVERFLOWS_BALANCE


def test_retry_returns_exists_and_moves_nothing() -> None:
    ledger = _ledger()
    request = _move("pay-1", "alice", "bob", 300)
    assert ledger.apply(request, 1)[0] is R.OK
    result, change = ledger.apply(request, 2)
    assert result is R.EXISTS
    assert result.succeeded
    assert change.entries == []
    assert ledger.accounts["alice"].posted_balance_minor == 700


def test_same_id_with_different_fields_never_posts() -> None:
    ledger = _ledger()
    assert ledger.apply(_move("pay-1", "alice", "bob", 300), 1)[0] is R.OK
    assert ledger.apply(_move("pay-1", "alice", "bob", 301), 2)[0] is R.EXISTS_WITH_DIFFERENT_FIELDS
    assert ledger.accounts["bob"].posted_balance_minor == 300


def test_a_refused_id_keeps_its_answer_even_after_funds_arrive() -> None:
    """Replays are answered, not re-decided: the caller saw 'insufficient_funds' and must keep seeing it."""
    ledger = _ledger()
    request = _move("pay-big", "alice", "bob", 5000)
    assert ledger.apply(request, 1)[0] is R.INSUFFICIENT_FUNDS
    assert ledger.apply(_move("top-up", "world", "alice", 10_000), 2)[0] is R.OK
    assert ledger.apply(request, 3)[0] is R.INSUFFICIENT_FUNDS
    assert ledger.apply(_move("pay-big", "alice", "bob", 4999), 3)[0] is R.EXISTS_WITH_DIFFERENT_FIELDS


def test_pending_then_partial_post_releases_the_rest() -> None:
    ledger = _ledger()
    assert ledger.apply(_move("hold", "alice", "bob", 600, M.PENDING), 1)[0] is R.OK
    alice = ledger.accounts["alice"]
    assert alice.debits_pending_minor == 600
    # the hold counts as spent
    assert ledger.apply(_move("other", "alice", "bob", 401), 1)[0] is R.INSUFFICIENT_FUNDS
    assert ledger.apply(_resolve("cap", "hold", M.POST_PENDING, 601), 2)[0] is R.EXCEEDS_PENDING_AMOUNT
    # "cap" was refused and keeps its answer; the caller retries the capture under a new id
    assert ledger.apply(_resolve("cap", "hold", M.POST_PENDING, 250), 2)[0] is R.EXISTS_WITH_DIFFERENT_FIELDS
    result, change = ledger.apply(_resolve("cap-2", "hold", M.POST_PENDING, 250), 2)
    assert result is R.OK
    assert [(e.account_id, e.side, e.amount_minor) for e in change.entries] == [
        ("alice", "debit", 250),
        ("bob", "credit", 250),
    ]
    assert alice.debits_pending_minor == 0
    assert alice.posted_balance_minor == 750
    assert ledger.transfers["hold"].pending_state is PendingState.POSTED
    assert ledger.apply(_resolve("cap-again", "hold", M.POST_PENDING), 3)[0] is R.ALREADY_POSTED
    assert ledger.apply(_resolve("void", "hold", M.VOID_PENDING), 3)[0] is R.ALREADY_POSTED


def test_void_releases_and_happens_once() -> None:
    ledger = _ledger()
    ledger.apply(_move("hold", "alice", "bob", 600, M.PENDING), 1)
    assert ledger.apply(_resolve("void", "hold", M.VOID_PENDING), 2)[0] is R.OK
    assert ledger.accounts["alice"].debits_pending_minor == 0
    assert ledger.accounts["bob"].credits_pending_minor == 0
    assert ledger.apply(_resolve("void-2", "hold", M.VOID_PENDING), 3)[0] is R.ALREADY_VOIDED
    assert ledger.apply(_resolve("post", "hold", M.POST_PENDING), 3)[0] is R.ALREADY_VOIDED


def test_void_is_allowed_on_a_frozen_account_but_post_is_not() -> None:
    ledger = _ledger()
    ledger.apply(_move("hold", "alice", "bob", 600, M.PENDING), 1)
    ledger.accounts["alice"].status = AccountStatus.FROZEN
    assert ledger.apply(_resolve("post", "hold", M.POST_PENDING), 2)[0] is R.ACCOUNT_FROZEN
    assert ledger.apply(_resolve("void", "hold", M.VOID_PENDING), 2)[0] is R.OK


def test_pending_expires_after_its_timeout() -> None:
    ledger = _ledger()
    ledger.apply(_move("hold", "alice", "bob", 600, M.PENDING, timeout_s=30), 0)
    assert ledger.expire("hold", now_us=29 * S) is None
    assert ledger.apply(_resolve("post", "hold", M.POST_PENDING), 30 * S)[0] is R.EXPIRED
    assert ledger.transfers["hold"].pending_state is PendingState.EXPIRED
    assert ledger.accounts["alice"].debits_pending_minor == 0
    assert ledger.expire("hold", now_us=31 * S) is None, "an expiry happens once"


def test_post_naming_other_accounts_than_the_pending_is_refused() -> None:
    ledger = _ledger()
    ledger.apply(_move("hold", "alice", "bob", 600, M.PENDING), 1)
    request = TransferRequest(id="post", mode=M.POST_PENDING, pending_id="hold", credit_account_id="world")
    assert ledger.apply(request, 2)[0] is R.ACCOUNTS_DIFFER_FROM_PENDING


def test_account_creation_is_idempotent_and_validated() -> None:
    ledger = Ledger()
    spec = AccountSpec("a", "EUR", "o", CUSTOMER)
    assert ledger.create_account(spec, 0) is AccountResult.OK
    assert ledger.create_account(spec, 1) is AccountResult.EXISTS
    assert ledger.create_account(AccountSpec("a", "USD", "o"), 1) is AccountResult.EXISTS_WITH_DIFFERENT_FIELDS
    both = AccountFlags(debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=True)
    assert ledger.create_account(AccountSpec("b", "EUR", "o", both), 0) is AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    assert ledger.create_account(AccountSpec("c", "EUR", "o", overdraft_limit_minor=-1), 0) is (
        AccountResult.OVERDRAFT_LIMIT_MUST_NOT_BE_NEGATIVE
    )
    assert ledger.create_account(AccountSpec("", "EUR", "o"), 0) is AccountResult.ID_MUST_NOT_BE_EMPTY
