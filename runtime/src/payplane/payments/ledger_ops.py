"""What the payment worker asks of the ledger, and what the ledger's answer does to a payment (pure).

Every request to the ledger is a *ledger operation* with a transfer id derived from the payment, so a
retry or a redelivered outcome can be recognised:

    charge     ``<pay_id>``            posted       source → destination (automatic capture)
    authorize  ``<pay_id>``            pending      a hold (manual capture, or a payment sent to review)
    capture    ``<pay_id>.capture``    post_pending the hold, fully or in part
    void       ``<pay_id>.void``       void_pending the hold
    refund     ``<re_id>``             posted       destination → source (a reverse transfer)

Commands are routed to the Kafka partition of the debit account's ledger partition. An outcome is
applied once: the operation is resolved by its first outcome and later copies change nothing (except
``expired`` for a hold, which the ledger sends on its own when an authorization times out).
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest
from payplane.payments.state_machine import (
    CaptureMethod,
    Event,
    EventKind,
    IllegalTransitionError,
    Payment,
    PaymentStatus,
    apply,
)
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.partitions import ledger_partition_for_account

AUTHORIZATION_TIMEOUT_S: Final = 7 * 24 * 60 * 60  # an uncaptured authorization is released after 7 days
SUCCESS_RESULTS: Final = frozenset({"ok", "exists"})


class OpKind(StrEnum):
    CHARGE = "charge"
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class AccountType(StrEnum):
    WALLET = "wallet"  # holds a customer's or merchant's funds: can never go below zero
    EXTERNAL = "external"  # a funding source outside the ledger (card network, bank): no balance limit


@dataclass(frozen=True)
class LedgerOp:
    transfer_id: str
    kind: OpKind
    payment_id: str
    amount_minor: int | None  # capture/refund amounts; None = the payment's amount / the whole hold
    refund_id: str = ""


@dataclass(frozen=True)
class OutgoingCommand:
    """One ledger command ready for the outbox."""

    kafka_partition: int
    key: bytes
    payload: bytes


def account_command(
    account_id: str, currency: str, owner: str, account_type: AccountType, partitions: int
) -> OutgoingCommand:
    flags = AccountFlags(debits_must_not_exceed_credits=account_type is AccountType.WALLET)
    spec = AccountSpec(id=account_id, currency=currency, owner=owner, flags=flags)
    payload = encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(spec)))
    return OutgoingCommand(ledger_partition_for_account(account_id, partitions), account_id.encode(), payload)


def transfer_command(request: TransferRequest, debit_account_id: str, partitions: int) -> OutgoingCommand:
    payload = encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(request)))
    partition = ledger_partition_for_account(debit_account_id, partitions)
    return OutgoingCommand(partition, debit_account_id.encode(), payload)


@dataclass(frozen=True)
class PaymentAccounts:
    source: str
    destination: str


def initial_op(payment: Payment, hold: bool) -> LedgerOp:
    kind = OpKind.AUTHORIZE if hold else OpKind.CHARGE
    return LedgerOp(payment.id, kind, payment.id, payment.amount_minor)


REVIEW_APPROVE: Final = "approve"  # pending actions of an admin's review decision
REVIEW_REJECT: Final = "reject"


def needs_hold(capture_method: CaptureMethod, review: bool) -> bool:
    return capture_method is CaptureMethod.MANUAL or review


def op_request(op: LedgerOp, payment: Payment, accounts: PaymentAccounts) -> tuple[TransferRequest, str]:
    """The transfer request of ``op`` and its debit account (which routes it)."""
    if op.kind is OpKind.CHARGE:
        return TransferRequest(
            op.transfer_id,
            TransferMode.POSTED,
            accounts.source,
            accounts.destination,
            payment.amount_minor,
            payment.currency,
            kind=TransferKind.PAYMENT,
            payment_ref=payment.id,
        ), accounts.source
    if op.kind is OpKind.AUTHORIZE:
        return TransferRequest(
            op.transfer_id,
            TransferMode.PENDING,
            accounts.source,
            accounts.destination,
            payment.amount_minor,
            payment.currency,
            timeout_s=AUTHORIZATION_TIMEOUT_S,
            kind=TransferKind.PAYMENT,
            payment_ref=payment.id,
        ), accounts.source
    if op.kind is OpKind.CAPTURE:
        return TransferRequest(
            op.transfer_id,
            TransferMode.POST_PENDING,
            amount_minor=op.amount_minor,
            pending_id=payment.id,
            kind=TransferKind.CAPTURE,
            payment_ref=payment.id,
        ), accounts.source
    if op.kind is OpKind.VOID:
        return TransferRequest(
            op.transfer_id, TransferMode.VOID_PENDING, pending_id=payment.id, payment_ref=payment.id
        ), accounts.source
    return TransferRequest(
        op.transfer_id,
        TransferMode.POSTED,
        accounts.destination,
        accounts.source,
        op.amount_minor,
        payment.currency,
        kind=TransferKind.REFUND,
        payment_ref=payment.id,
    ), accounts.destination


# --- outcomes -------------------------------------------------------------------------------------


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Resolution:
    """What one outcome does: the payment afterwards, and the fields the worker stores beside it."""

    payment: Payment
    failure_code: str = ""  # set when this outcome failed the payment or its pending action
    clear_pending_action: bool = False
    refund_status: RefundStatus | None = None  # for refunds
    changed: bool = True


def resolve(  # noqa: PLR0911 - one return per (kind, result)
    payment: Payment, op: LedgerOp, result: str, review: bool, pending_action: str = ""
) -> Resolution:
    """Apply the ledger's ``result`` for ``op`` to ``payment``.

    A capture of a payment in review is an admin's approval and a void with ``pending_action``
    ``reject`` is an admin's rejection (``review_rejected``). Never raises: an outcome that no longer
    fits the payment's state (a late duplicate, a hold that expired after it was captured) is recorded
    as unchanged.
    """
    ok = result in SUCCESS_RESULTS
    try:
        if op.kind in (OpKind.CHARGE, OpKind.AUTHORIZE):
            if not ok:
                return Resolution(apply(payment, Event(EventKind.LEDGER_REFUSED)), failure_code=result)
            if op.kind is OpKind.CHARGE:
                return Resolution(apply(payment, Event(EventKind.LEDGER_POSTED)))
            kind = EventKind.REVIEW_REQUIRED if review else EventKind.LEDGER_HELD
            return Resolution(apply(payment, Event(kind)))
        in_review = payment.status is PaymentStatus.REQUIRES_REVIEW
        if op.kind is OpKind.CAPTURE:
            if not ok:
                return Resolution(payment, failure_code=result, clear_pending_action=True)
            event = Event(EventKind.APPROVE) if in_review else Event(EventKind.CAPTURE, op.amount_minor)
            return Resolution(apply(payment, event), clear_pending_action=True)
        if op.kind is OpKind.VOID:
            if not ok:
                return Resolution(payment, failure_code=result, clear_pending_action=True)
            if in_review and pending_action == REVIEW_REJECT:
                return Resolution(
                    apply(payment, Event(EventKind.REJECT)), failure_code="review_rejected", clear_pending_action=True
                )
            return Resolution(apply(payment, Event(EventKind.CANCEL)), clear_pending_action=True)
        if not ok:
            return Resolution(payment, failure_code=result, refund_status=RefundStatus.FAILED)
        return Resolution(
            apply(payment, Event(EventKind.REFUND, op.amount_minor)), refund_status=RefundStatus.SUCCEEDED
        )
    except IllegalTransitionError:
        return Resolution(payment, changed=False)


def expire_hold(payment: Payment) -> Resolution:
    """The ledger released an authorization that was never captured: the payment is canceled."""
    if payment.status not in (PaymentStatus.AUTHORIZED, PaymentStatus.REQUIRES_REVIEW):
        return Resolution(payment, changed=False)
    return Resolution(
        apply(payment, Event(EventKind.CANCEL)),
        failure_code="authorization_expired",
        clear_pending_action=True,
    )
