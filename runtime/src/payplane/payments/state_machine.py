"""The payment state machine: every legal transition listed once; everything else is refused.

    processing ──ledger_posted──▶ succeeded ──refund──▶ partially_refunded ──refund──▶ refunded
        │  │  └──ledger_held──▶ authorized ──capture──▶ succeeded
        │  │                        └──cancel──▶ canceled
        │  └──ledger_refused | fraud_declined──▶ failed
        └──review_required──▶ requires_review ──approve──▶ succeeded | authorized
                                   └──reject | cancel──▶ canceled

``authorized`` holds the funds (a pending ledger transfer) until captured (posted, fully or in part)
or canceled (voided); ``requires_review`` holds them until an admin decides. Amounts are integer minor
units. ``apply`` is pure: it returns a new ``Payment`` or raises ``IllegalTransitionError``.
"""

from dataclasses import dataclass, replace
from enum import StrEnum


class PaymentStatus(StrEnum):
    PROCESSING = "processing"
    REQUIRES_REVIEW = "requires_review"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class EventKind(StrEnum):
    LEDGER_POSTED = "ledger_posted"  # the ledger moved the money (automatic capture)
    LEDGER_HELD = "ledger_held"  # the ledger placed the hold (manual capture)
    LEDGER_REFUSED = "ledger_refused"  # insufficient funds, frozen account, …
    REVIEW_REQUIRED = "review_required"  # the fraud policy wants a person to look
    FRAUD_DECLINED = "fraud_declined"  # the fraud policy refused it before any money moved
    APPROVE = "approve"
    REJECT = "reject"
    CAPTURE = "capture"
    CANCEL = "cancel"
    REFUND = "refund"


TERMINAL = frozenset({PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.REFUNDED})

S, E = PaymentStatus, EventKind
# (from, event) → to; approve's target depends on the capture method and is resolved in ``apply``.
TRANSITIONS: dict[tuple[PaymentStatus, EventKind], PaymentStatus] = {
    (S.PROCESSING, E.LEDGER_POSTED): S.SUCCEEDED,
    (S.PROCESSING, E.LEDGER_HELD): S.AUTHORIZED,
    (S.PROCESSING, E.LEDGER_REFUSED): S.FAILED,
    (S.PROCESSING, E.REVIEW_REQUIRED): S.REQUIRES_REVIEW,
    (S.PROCESSING, E.FRAUD_DECLINED): S.FAILED,
    (S.REQUIRES_REVIEW, E.APPROVE): S.SUCCEEDED,
    (S.REQUIRES_REVIEW, E.REJECT): S.CANCELED,
    (S.REQUIRES_REVIEW, E.CANCEL): S.CANCELED,
    (S.AUTHORIZED, E.CAPTURE): S.SUCCEEDED,
    (S.AUTHORIZED, E.CANCEL): S.CANCELED,
    (S.SUCCEEDED, E.REFUND): S.PARTIALLY_REFUNDED,
    (S.PARTIALLY_REFUNDED, E.REFUND): S.PARTIALLY_REFUNDED,
}


class IllegalTransitionError(Exception):
    """The event is not allowed in the payment's current state (or its amount is out of range)."""

    def __init__(self, status: PaymentStatus, event: "Event", why: str = "") -> None:
        detail = f": {why}" if why else ""
        super().__init__(f"cannot {event.kind.value} a payment that is {status.value}{detail}")
        self.status = status
        self.event = event


@dataclass(frozen=True)
class Event:
    kind: EventKind
    amount_minor: int | None = None  # capture and refund amounts; None = the whole remaining amount


@dataclass(frozen=True)
class Payment:
    id: str
    amount_minor: int
    currency: str
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    status: PaymentStatus = PaymentStatus.PROCESSING
    captured_minor: int = 0
    refunded_minor: int = 0

    @property
    def refundable_minor(self) -> int:
        return self.captured_minor - self.refunded_minor


def apply(payment: Payment, event: Event) -> Payment:
    """The payment after ``event``; raises IllegalTransitionError when the transition is not listed."""
    target = TRANSITIONS.get((payment.status, event.kind))
    if target is None:
        raise IllegalTransitionError(payment.status, event)
    if event.kind is EventKind.APPROVE and payment.capture_method is CaptureMethod.MANUAL:
        target = PaymentStatus.AUTHORIZED
    if target is PaymentStatus.SUCCEEDED:
        return replace(payment, status=target, captured_minor=_captured(payment, event))
    if event.kind is EventKind.REFUND:
        return _refund(payment, event)
    return replace(payment, status=target)


def _captured(payment: Payment, event: Event) -> int:
    if event.kind is not EventKind.CAPTURE or event.amount_minor is None:
        return payment.amount_minor
    if not 0 < event.amount_minor <= payment.amount_minor:
        raise IllegalTransitionError(payment.status, event, f"capture amount must be within 1..{payment.amount_minor}")
    return event.amount_minor


def _refund(payment: Payment, event: Event) -> Payment:
    amount = payment.refundable_minor if event.amount_minor is None else event.amount_minor
    if not 0 < amount <= payment.refundable_minor:
        raise IllegalTransitionError(
            payment.status, event, f"refund amount must be within 1..{payment.refundable_minor}"
        )
    refunded = payment.refunded_minor + amount
    status = PaymentStatus.REFUNDED if refunded == payment.captured_minor else PaymentStatus.PARTIALLY_REFUNDED
    return replace(payment, status=status, refunded_minor=refunded)
