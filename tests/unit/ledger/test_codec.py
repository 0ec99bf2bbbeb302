"""Strict decoding of ledger commands: every bad field is named, money is never a float."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payplane.ledger.codec import (
    RequestDecodeError,
    account_spec_from_dict,
    account_spec_to_dict,
    decode_command_bytes,
    decode_stored_request,
    encode_outcome_fast,
    encode_request,
    request_from_dict,
    request_to_dict,
)
from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import (
    MESSAGE_BYTES_MAX,
    CommandType,
    MessageError,
    TransferOutcome,
    decode_command,
    decode_outcome,
    encode_outcome,
)

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


# -- the writer's fast path agrees with the reference decoders --------------------------------------
def _reference(raw: bytes | None) -> object:
    """What the standard-library decoders make of ``raw``: the command, or the error's type and text."""
    try:
        message = decode_command(raw)
        if message.type is CommandType.CREATE_ACCOUNT:
            return account_spec_from_dict(message.body)
        return request_from_dict(message.body)
    except (MessageError, RequestDecodeError) as exc:
        return (type(exc), str(exc))


def _fast(raw: bytes | None) -> object:
    try:
        return decode_command_bytes(raw)
    except (MessageError, RequestDecodeError) as exc:
        return (type(exc), str(exc))


def _envelope(body: object, v: object = 1, kind: object = "transfer") -> bytes:
    return json.dumps({"v": v, "type": kind, "body": body}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        _envelope(GOOD),
        _envelope(GOOD | {"amount_minor": None, "mode": "post_pending", "pending_id": "p"}),
        _envelope(GOOD | {"amount_minor": 10**30}),  # beyond int64: the reference decides (engine refuses)
        _envelope(GOOD | {"amount_minor": 1.0}),
        _envelope(GOOD | {"amount_minor": True}),
        _envelope(GOOD | {"surprise": 1}),
        _envelope({"id": "t"}),
        _envelope([]),
        _envelope(GOOD, v=2),
        _envelope(GOOD, v=1.0),
        _envelope(GOOD, kind="teleport"),
        _envelope({"id": "a", "currency": "EUR", "owner": "o"}, kind="create_account"),
        _envelope({"id": "a", "currency": "eur", "owner": "o"}, kind="create_account"),
        b'{"v": 1, "type": "transfer", "body": {"id": "a", "id": "b", "mode": "posted"}}',
        b'{"v": 1, "type": "transfer", "body": {}, "extra": 1}',
        b"[1, 2]",
        b"not json",
        b"\xff\xfe",
        b"",
        None,
        b" " * (MESSAGE_BYTES_MAX + 1),
    ],
)
def test_fast_decoder_answers_like_the_reference(raw: bytes | None) -> None:
    assert _fast(raw) == _reference(raw)


_TEXT = st.text(max_size=12)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_FIELD_VALUES = {
    "id": _TEXT,
    "mode": st.sampled_from([m.value for m in TransferMode]) | _JSONISH,
    "kind": st.sampled_from([k.value for k in TransferKind]) | _JSONISH,
    "amount_minor": st.none() | st.integers(min_value=-(2**70), max_value=2**70) | _JSONISH,
    "timeout_s": st.integers(min_value=-5, max_value=10**9) | _JSONISH,
}


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            **_FIELD_VALUES,
            **dict.fromkeys(("debit_account_id", "currency", "pending_id", "forward_to"), _TEXT | _JSONISH),
            "unexpected": _JSONISH,
        },
    )
)
@settings(max_examples=400, deadline=None)
def test_fast_decoder_agrees_on_arbitrary_bodies(body: dict[str, object]) -> None:
    raw = _envelope(body)
    assert _fast(raw) == _reference(raw)


def test_stored_requests_round_trip() -> None:
    request = TransferRequest("t1", TransferMode.POST_PENDING, pending_id="p", user_data="u", reverse_to="r")
    stored = encode_request(request)
    assert json.loads(stored) == request_to_dict(request)
    assert decode_stored_request(stored) == request
    assert decode_stored_request(stored.decode()) == request


def test_outcome_documents_match_the_contract() -> None:
    outcome = TransferOutcome("t1", "insufficient_funds", 3, 1_700_000_000_000_000, "pi_1")
    fast = encode_outcome_fast(outcome)
    assert json.loads(fast) == json.loads(encode_outcome(outcome))
    assert decode_outcome(fast) == outcome
