"""Ledger operations of a payment and what each outcome does to it (pure)."""

from payplane.ledger.model import TransferMode
from payplane.payments.ledger_ops import (
    LedgerOp,
    OpKind,
    PaymentAccounts,
    RefundStatus,
    expire_hold,
    op_request,
    resolve,
)
from payplane.payments.state_machine import CaptureMethod, Payment, PaymentStatus

ACCOUNTS = PaymentAccounts("acct_src", "acct_dst")


def test_each_operation_maps_to_its_transfer_mode_and_debit_account() -> None:
    payment = Payment("pay_1", 1000, "EUR", CaptureMethod.MANUAL)
    expected = {
        OpKind.CHARGE: (TransferMode.POSTED, "acct_src", "pay_1"),
        OpKind.AUTHORIZE: (TransferMode.PENDING, "acct_src", "pay_1"),
        OpKind.CAPTURE: (TransferMode.POST_PENDING, "acct_src", "pay_1.capture"),
        OpKind.VOID: (TransferMode.VOID_PENDING, "acct_src", "pay_1.void"),
        OpKind.REFUND: (TransferMode.POSTED, "acct_dst", "re_1"),
    }
    for kind, (mode, debit, transfer_id) in expected.items():
        op = LedgerOp(transfer_id, kind, "pay_1", 400 if kind in (OpKind.CAPTURE, OpKind.REFUND) else None)
        request, routed_by = op_request(op, payment, ACCOUNTS)
        assert (request.mode, routed_by, request.id, request.payment_ref) == (mode, debit, transfer_id, "pay_1")


def test_outcomes_drive_the_state_machine_and_late_duplicates_change_nothing() -> None:
    payment = Payment("pay_1", 1000, "EUR")
    charge = LedgerOp("pay_1", OpKind.CHARGE, "pay_1", 1000)
    done = resolve(payment, charge, "ok", review=False)
    assert done.payment.status is PaymentStatus.SUCCEEDED
    assert resolve(done.payment, charge, "ok", review=False).changed is False

    refused = resolve(payment, charge, "insufficient_funds", review=False)
    assert (refused.payment.status, refused.failure_code) == (PaymentStatus.FAILED, "insufficient_funds")

    refund = LedgerOp("re_1", OpKind.REFUND, "pay_1", 300, "re_1")
    refunded = resolve(done.payment, refund, "exists", review=False)
    assert (refunded.payment.status, refunded.refund_status) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        RefundStatus.SUCCEEDED,
    )
    failed = resolve(done.payment, refund, "insufficient_funds", review=False)
    assert (failed.payment.status, failed.refund_status) == (PaymentStatus.SUCCEEDED, RefundStatus.FAILED)


def test_holds_for_review_and_expiry() -> None:
    payment = Payment("pay_1", 1000, "EUR")
    hold = LedgerOp("pay_1", OpKind.AUTHORIZE, "pay_1", 1000)
    assert resolve(payment, hold, "ok", review=True).payment.status is PaymentStatus.REQUIRES_REVIEW
    authorized = resolve(Payment("pay_1", 1000, "EUR", CaptureMethod.MANUAL), hold, "ok", review=False).payment
    assert authorized.status is PaymentStatus.AUTHORIZED
    expired = expire_hold(authorized)
    assert (expired.payment.status, expired.failure_code) == (PaymentStatus.CANCELED, "authorization_expired")
    assert expire_hold(expired.payment).changed is False


def test_review_decisions_resolve_through_the_hold() -> None:
    in_review = Payment("pay_1", 1000, "EUR", status=PaymentStatus.REQUIRES_REVIEW)
    post = LedgerOp("pay_1.capture", OpKind.CAPTURE, "pay_1", None)
    approved = resolve(in_review, post, "ok", review=True, pending_action="approve")
    assert (approved.payment.status, approved.payment.captured_minor) == (PaymentStatus.SUCCEEDED, 1000)
    assert approved.clear_pending_action

    void = LedgerOp("pay_1.void", OpKind.VOID, "pay_1", None)
    rejected = resolve(in_review, void, "ok", review=True, pending_action="reject")
    assert (rejected.payment.status, rejected.failure_code) == (PaymentStatus.CANCELED, "review_rejected")
    canceled = resolve(in_review, void, "ok", review=True, pending_action="cancel")  # the client's own cancel
    assert (canceled.payment.status, canceled.failure_code) == (PaymentStatus.CANCELED, "")

    refused = resolve(in_review, post, "pending_transfer_expired", review=True, pending_action="approve")
    assert (refused.payment.status, refused.failure_code) == (PaymentStatus.REQUIRES_REVIEW, "pending_transfer_expired")
    assert refused.clear_pending_action
