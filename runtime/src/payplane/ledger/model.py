"""Accounts, transfers and entries: the ledger's data, as plain values.

Amounts are integer minor units (cents for EUR, yen for JPY) of the account's currency; never floats.
Balances are four counters in the spirit of TigerBeetle: posted and pending, debits and credits. An
account's available balance follows from them and from its flags.

The values are ``msgspec.Struct``s rather than dataclasses: a writer creates and compares several of
them per transfer, tens of thousands of times a second, and Structs are created, compared and decoded
from JSON in C (``payplane.ledger.codec``). ``gc=False`` where a value can never hold a reference
cycle keeps them out of the cyclic garbage collector. They behave as dataclasses do otherwise.
"""

from enum import StrEnum
from typing import Final

import msgspec

from payplane.ledger.results import TransferResult

# Bounds chosen so every balance fits PostgreSQL's bigint with room for a year of a busy rail.
AMOUNT_MAX_MINOR: Final = 10**15  # 10 trillion in a 2-decimal currency, per transfer
BALANCE_MAX_MINOR: Final = 2**63 - 1  # PostgreSQL bigint
PENDING_TIMEOUT_MAX_S: Final = 60 * 60 * 24 * 31  # a hold lasts at most a month


class AccountStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"  # fraud confirmed or under investigation: nothing moves in or out except voids
    CLOSED = "closed"  # terminal: nothing moves except voids of old holds


class AccountFlags(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """Balance limits (mutually exclusive) and the internal marker for transit/fee/world accounts."""

    debits_must_not_exceed_credits: bool = False  # a customer's funds: cannot go below -overdraft
    credits_must_not_exceed_debits: bool = False  # a liability that can only be paid back
    internal: bool = False  # transit, fees, the rail's settlement ("world") account


class AccountSpec(msgspec.Struct, frozen=True, gc=False):
    """What a caller asks for when opening an account; creating it twice with equal specs is a no-op."""

    id: str
    currency: str
    owner: str
    flags: AccountFlags = AccountFlags()
    overdraft_limit_minor: int = 0  # only meaningful with debits_must_not_exceed_credits


class Account(msgspec.Struct, gc=False):
    spec: AccountSpec
    status: AccountStatus = AccountStatus.ACTIVE
    debits_pending_minor: int = 0
    debits_posted_minor: int = 0
    credits_pending_minor: int = 0
    credits_posted_minor: int = 0
    created_at_us: int = 0

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def currency(self) -> str:
        return self.spec.currency

    @property
    def posted_balance_minor(self) -> int:
        """Credits minus debits, posted only (positive = the ledger owes the owner)."""
        return self.credits_posted_minor - self.debits_posted_minor

    def balances(self) -> tuple[int, int, int, int]:
        return (
            self.debits_pending_minor,
            self.debits_posted_minor,
            self.credits_pending_minor,
            self.credits_posted_minor,
        )


class TransferMode(StrEnum):
    POSTED = "posted"  # single phase: moves money at once
    PENDING = "pending"  # reserves money (a hold) until posted, voided or expired
    POST_PENDING = "post_pending"  # settles a pending transfer, fully or in part
    VOID_PENDING = "void_pending"  # releases a pending transfer


class TransferKind(StrEnum):
    """Why money moves; reporting and reconciliation group by it."""

    PAYMENT = "payment"
    CAPTURE = "capture"
    REFUND = "refund"
    FEE = "fee"
    TRANSIT_DEBIT = "transit_debit"  # first leg of a cross-partition transfer
    TRANSIT_CREDIT = "transit_credit"  # second leg
    REVERSAL = "reversal"  # returns a first leg whose second leg could not post
    COMPENSATION = "compensation"  # fraud after settlement
    ADJUSTMENT = "adjustment"


class PendingState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class TransferRequest(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One transfer as a caller submits it. ``id`` is chosen by the caller and makes retries safe.

    For ``POST_PENDING`` and ``VOID_PENDING`` the accounts and currency come from the pending transfer
    and may be left empty; ``amount_minor`` of a post may be ``None`` (the full pending amount) or a part.
    """

    id: str
    mode: TransferMode
    debit_account_id: str = ""
    credit_account_id: str = ""
    amount_minor: int | None = None
    currency: str = ""
    pending_id: str = ""
    timeout_s: int = 0
    kind: TransferKind = TransferKind.PAYMENT
    payment_ref: str = ""
    user_data: str = ""
    # Cross-partition legs (see payplane.ledger.legs): a first leg remembers the real creditor, a credit
    # leg the debtor to return the money to if it is refused.
    forward_to: str = ""
    reverse_to: str = ""


class Transfer(msgspec.Struct, gc=False):
    """A transfer the ledger applied. Immutable but for ``pending_state`` of a pending transfer."""

    request: TransferRequest
    debit_account_id: str
    credit_account_id: str
    amount_minor: int
    currency: str
    applied_at_us: int
    expires_at_us: int | None = None  # pending transfers with a timeout
    pending_state: PendingState | None = None  # only for PENDING transfers

    @property
    def id(self) -> str:
        return self.request.id


class EntrySide(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One side of a posted movement; an account's posted balances are the sum of its entries."""

    transfer_id: str
    account_id: str
    side: EntrySide
    amount_minor: int


_POSTING_MODES: Final = frozenset({TransferMode.POSTED, TransferMode.POST_PENDING})


class BalanceChange(msgspec.Struct, gc=False):
    """What applying one request did to the ledger, for the caller to persist."""

    transfer: Transfer | None = None  # the new transfer row, when one was created
    pending_resolved: Transfer | None = None  # the pending transfer this post/void/expiry resolved
    rejection: tuple[TransferRequest, TransferResult] | None = None  # a refusal remembered just now

    @property
    def entries(self) -> list[Entry]:
        """The posted movement's debit and credit entries: a posted transfer (or post of a hold) is its
        pair of entries, as the database's ``entries`` view derives them; holds and voids post none."""
        transfer = self.transfer
        if transfer is None or transfer.request.mode not in _POSTING_MODES:
            return []
        return [
            Entry(transfer.id, transfer.debit_account_id, EntrySide.DEBIT, transfer.amount_minor),
            Entry(transfer.id, transfer.credit_account_id, EntrySide.CREDIT, transfer.amount_minor),
        ]
