"""Strict decoding of ledger commands: every bad field is named, money is never a float."""

import pytest

from payplane.ledger.codec import (
    RequestDecodeError,
    account_spec_from_dict,
    account_spec_to_dict,
    request_from_dict,
    request_to_dict,
)
from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest

GOOD = {
    "id": "t1",
    "mode": "posted",
    "debit_account_id": "a",
    "credit_account_id": "b",
    "amount_minor": 5,
    "currency": "EUR",
}


def test_round_trip() -> None:
    request = TransferRequest(
        "t1",
        TransferMode.PENDING,
        "a",
        "b",
        5,
        "EUR",
        timeout_s=30,
        kind=TransferKind.REFUND,
        payment_ref="pi_1",
        forward_to="c",
    )
    assert request_from_dict(request_to_dict(request)) == request
    spec = AccountSpec("a", "EUR", "o", AccountFlags(debits_must_not_exceed_credits=True), overdraft_limit_minor=7)
    assert account_spec_from_dict(account_spec_to_dict(spec)) == spec


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_minor": 1.5}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"amount_minor": "5"}, "amount_minor"),
        ({"timeout_s": None}, "timeout_s"),
        ({"mode": "teleport"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"kind": "gift"}, "kind"),
        ({"currency": 978}, "currency"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(RequestDecodeError) as caught:
        request_from_dict(GOOD | change)
    assert caught.value.field == field


@pytest.mark.parametrize("missing", ["id", "mode"])
def test_required_fields(missing: str) -> None:
    body = dict(GOOD)
    del body[missing]
    with pytest.raises(RequestDecodeError, match=missing):
        request_from_dict(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "(account)"),
        ({"id": "a", "currency": "eur", "owner": "o"}, "currency"),
        ({"id": "a", "currency": "EUR"}, "owner"),
        ({"id": "a", "currency": "EUR", "owner": "o", "flags": ["fly"]}, "flags"),
        ({"id": "a", "currency": "EUR", "owner": "o", "overdraft_limit_minor": 0.5}, "overdraft_limit_minor"),
    ],
)
def test_bad_accounts_are_named(body: object, field: str) -> None:
    with pytest.raises(RequestDecodeError) as caught:
        account_spec_from_dict(body)
    assert caught.value.field == field
