"""Cross-partition transfers as two idempotent legs through per-partition transit accounts.

A transfer whose credit account lives on another partition is applied on the debtor's partition as a
*first leg*: debtor → ``~transit:<CUR>:<debtor partition>``, remembering the real creditor in
``forward_to``. When it posts (at once, or when its hold is posted) the writer forwards a *credit leg*
to the creditor's partition: ``~transit:<CUR>:<creditor partition>`` → creditor, with ``reverse_to``
naming the debtor. If the credit leg is refused (creditor frozen, closed or missing) its writer sends a
*reversal* back: ``~transit`` → debtor. Every leg is an ordinary balanced transfer, so Σ = 0 holds at
every instant, and money in flight is visible in the transit accounts. Leg ids derive from the origin id,
so replays of any leg are answered ``exists`` and never move money twice.
"""

from typing import Final

from msgspec.structs import replace

from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest
from payplane_contracts.partitions import transit_account_id

LEG_SEPARATOR: Final = "~"
CREDIT_LEG_SUFFIX: Final = f"{LEG_SEPARATOR}credit"
REVERSAL_SUFFIX: Final = f"{LEG_SEPARATOR}reversal"
TRANSIT_OWNER: Final = "payplane-transit"


def origin_id(leg_id: str) -> str:
    """The transfer id the client chose, for any leg id."""
    return leg_id.split(LEG_SEPARATOR, 1)[0]


def is_generated_leg(request: TransferRequest) -> bool:
    return request.kind in (TransferKind.TRANSIT_CREDIT, TransferKind.REVERSAL)


def transit_spec(currency: str, partition: int) -> AccountSpec:
    return AccountSpec(transit_account_id(currency, partition), currency, TRANSIT_OWNER, AccountFlags(internal=True))


def first_leg(request: TransferRequest, partition: int) -> TransferRequest:
    """The debtor-side leg of a cross-partition transfer (deterministic, so retries compare equal)."""
    return replace(
        request,
        credit_account_id=transit_account_id(request.currency, partition),
        forward_to=request.credit_account_id,
    )


def credit_leg(resolved_id: str, first: TransferRequest, amount_minor: int, creditor_partition: int) -> TransferRequest:
    """The creditor-side leg, for ``amount_minor`` posted by transfer ``resolved_id``."""
    return TransferRequest(
        id=f"{resolved_id}{CREDIT_LEG_SUFFIX}",
        mode=TransferMode.POSTED,
        debit_account_id=transit_account_id(first.currency, creditor_partition),
        credit_account_id=first.forward_to,
        amount_minor=amount_minor,
        currency=first.currency,
        kind=TransferKind.TRANSIT_CREDIT,
        payment_ref=first.payment_ref,
        reverse_to=first.debit_account_id,
    )


def reversal(refused_leg: TransferRequest, reason: str, debtor_partition: int) -> TransferRequest:
    """Returns a refused credit leg's money to the debtor; ``user_data`` carries the refusal reason."""
    return TransferRequest(
        id=f"{origin_id(refused_leg.id)}{REVERSAL_SUFFIX}",
        mode=TransferMode.POSTED,
        debit_account_id=transit_account_id(refused_leg.currency, debtor_partition),
        credit_account_id=refused_leg.reverse_to,
        amount_minor=refused_leg.amount_minor,
        currency=refused_leg.currency,
        kind=TransferKind.REVERSAL,
        payment_ref=refused_leg.payment_ref,
        user_data=reason,
    )
