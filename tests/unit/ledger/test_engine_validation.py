"""The engine's request checks keep their documented precedence (docs/ledger.md, "Results"): the
hand-written checks are compared with the precedence list, written as a table, on arbitrary requests."""

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from payplane.ledger.engine import Ledger
from payplane.ledger.model import AMOUNT_MAX_MINOR, PENDING_TIMEOUT_MAX_S, TransferKind, TransferMode, TransferRequest
from payplane.ledger.results import TransferResult as R


def _resolving(r: TransferRequest) -> bool:
    return r.mode in (TransferMode.POST_PENDING, TransferMode.VOID_PENDING)


def _amount_not_positive(r: TransferRequest) -> bool:
    return not _resolving(r) if r.amount_minor is None else r.amount_minor <= 0


PRECEDENCE: list[tuple[Callable[[TransferRequest], bool], R]] = [
    (lambda r: not r.id, R.ID_MUST_NOT_BE_EMPTY),
    (_amount_not_positive, R.AMOUNT_MUST_BE_POSITIVE),
    (lambda r: (r.amount_minor or 0) > AMOUNT_MAX_MINOR, R.AMOUNT_EXCEEDS_MAXIMUM),
    (lambda r: not _resolving(r) and r.debit_account_id == r.credit_account_id, R.ACCOUNTS_MUST_BE_DIFFERENT),
    (lambda r: _resolving(r) and not r.pending_id, R.PENDING_ID_REQUIRED),
    (lambda r: not _resolving(r) and bool(r.pending_id), R.PENDING_ID_NOT_ALLOWED),
    (lambda r: r.pending_id == r.id, R.PENDING_ID_MUST_DIFFER),
    (lambda r: bool(r.timeout_s) and r.mode is not TransferMode.PENDING, R.TIMEOUT_RESERVED_FOR_PENDING),
    (lambda r: not 0 <= r.timeout_s <= PENDING_TIMEOUT_MAX_S, R.TIMEOUT_OUT_OF_RANGE),
]

_IDS = st.sampled_from(["", "a", "b", "t"])
requests = st.builds(
    TransferRequest,
    id=_IDS,
    mode=st.sampled_from(list(TransferMode)),
    debit_account_id=_IDS,
    credit_account_id=_IDS,
    amount_minor=st.none() | st.sampled_from([-1, 0, 1, AMOUNT_MAX_MINOR, AMOUNT_MAX_MINOR + 1]),
    currency=st.just("EUR"),
    pending_id=_IDS,
    timeout_s=st.sampled_from([-1, 0, 1, PENDING_TIMEOUT_MAX_S, PENDING_TIMEOUT_MAX_S + 1]),
    kind=st.sampled_from(list(TransferKind)),
)


@given(requests)
@settings(max_examples=2000, deadline=None)
def test_request_checks_follow_the_documented_precedence(request: TransferRequest) -> None:
    expected = next((result for failed, result in PRECEDENCE if failed(request)), None)
    result, change = Ledger().apply(request, now_us=0)
    if expected is not None:
        assert result is expected
        assert change.rejection is None  # malformed requests are not remembered
    else:
        assert result not in {r for _, r in PRECEDENCE}
