"""The payment state machine: every (state, event) pair is either listed and behaves, or is refused."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payplane.payments.state_machine import (
    TERMINAL,
    TRANSITIONS,
    CaptureMethod,
    Event,
    EventKind,
    IllegalTransitionError,
    Payment,
    PaymentStatus,
    apply,
)

S, E = PaymentStatus, EventKind


def _in(status: PaymentStatus, **kw: object) -> Payment:
    captured = 1000 if status in (S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED) else 0
    return Payment("pay_1", 1000, "EUR", status=status, captured_minor=captured, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "kind"), list(itertools.product(PaymentStatus, EventKind)))
def test_every_pair_is_listed_or_refused(status: PaymentStatus, kind: EventKind) -> None:
    payment = _in(status)
    if (status, kind) in TRANSITIONS:
        assert apply(payment, Event(kind)).status in PaymentStatus
    else:
        with pytest.raises(IllegalTransitionError, match=f"cannot {kind.value}"):
            apply(payment, Event(kind))


def test_terminal_states_have_no_way_out() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] in TERMINAL]


def test_manual_capture_in_part_then_refunds_in_parts() -> None:
    payment = Payment("pay_1", 1000, "EUR", CaptureMethod.MANUAL)
    payment = apply(payment, Event(E.LEDGER_HELD))
    assert payment.status is S.AUTHORIZED
    with pytest.raises(IllegalTransitionError, match=r"1\.\.1000"):
        apply(payment, Event(E.CAPTURE, 1001))
    payment = apply(payment, Event(E.CAPTURE, 600))
    assert (payment.status, payment.captured_minor) == (S.SUCCEEDED, 600)
    payment = apply(payment, Event(E.REFUND, 100))
    assert (payment.status, payment.refunded_minor) == (S.PARTIALLY_REFUNDED, 100)
    with pytest.raises(IllegalTransitionError, match=r"1\.\.500"):
        apply(payment, Event(E.REFUND, 501))
    payment = apply(payment, Event(E.REFUND))
    assert (payment.status, payment.refunded_minor) == (S.REFUNDED, 600)
    with pytest.raises(IllegalTransitionError):
        apply(payment, Event(E.REFUND, 1))


def test_review_approval_follows_the_capture_method() -> None:
    automatic = apply(Payment("a", 10, "EUR"), Event(E.REVIEW_REQUIRED))
    manual = apply(Payment("m", 10, "EUR", CaptureMethod.MANUAL), Event(E.REVIEW_REQUIRED))
    assert apply(automatic, Event(E.APPROVE)).status is S.SUCCEEDED
    assert apply(manual, Event(E.APPROVE)).status is S.AUTHORIZED
    assert apply(automatic, Event(E.REJECT)).status is S.CANCELED


@given(st.lists(st.tuples(st.sampled_from(list(EventKind)), st.one_of(st.none(), st.integers(-5, 1200))), max_size=30))
def test_random_event_sequences_keep_the_money_consistent(events: list[tuple[EventKind, int | None]]) -> None:
    payment = Payment("pay", 1000, "EUR", CaptureMethod.MANUAL)
    for kind, amount in events:
        try:
            payment = apply(payment, Event(kind, amount))
        except IllegalTransitionError:
            continue
        assert 0 <= payment.refunded_minor <= payment.captured_minor <= payment.amount_minor
        if payment.status is S.REFUNDED:
            assert payment.refunded_minor == payment.captured_minor
