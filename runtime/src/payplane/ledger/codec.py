"""Ledger commands and transfer requests as JSON: how they travel (the commands topic), how they are
stored (``request`` columns) and compared.

Decoding is strict: unknown fields, wrong types or unknown enum values raise ``RequestDecodeError``
with the field's name (or ``MessageError`` for a bad envelope), so a bad command can be dead-lettered
with a precise reason.

Two paths with one meaning. ``request_from_dict`` and ``payplane_contracts.ledger_messages`` are the
reference decoders (standard library). ``decode_command_bytes``, which the writer runs for every
record, first tries msgspec's C decoder, which accepts a subset of what the reference accepts (exact
types, int64 amounts) and builds the same values ten times faster; anything it refuses goes through
the reference path, so a bad or unusual command gets exactly the reference's answer and message.
"""

import json
import re
from typing import Any, Final

import msgspec

from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import (
    MESSAGE_BYTES_MAX,
    SCHEMA_VERSION,
    CommandType,
    TransferOutcome,
    decode_command,
)

_CURRENCY = re.compile(r"^[A-Z]{3}$")

_FIELD_ORDER: tuple[str, ...] = TransferRequest.__struct_fields__
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_MODES = {m.value: m for m in TransferMode}
_KINDS = {k.value: k for k in TransferKind}


class RequestDecodeError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def request_to_dict(request: TransferRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in _FIELD_ORDER}


_REQUEST_ENCODER: Final = msgspec.json.Encoder()
_REQUEST_DECODER: Final = msgspec.json.Decoder(TransferRequest)


def encode_request(request: TransferRequest) -> bytes:
    """The request as stored (compact JSON, the same document as ``request_to_dict``)."""
    return _REQUEST_ENCODER.encode(request)


def decode_stored_request(raw: str | bytes) -> TransferRequest:
    """A request read back from a ``request`` column (written by this module, so well-formed)."""
    try:
        return _REQUEST_DECODER.decode(raw)
    except msgspec.MsgspecError:
        return request_from_dict(json.loads(raw))


class _OutcomeDocument(msgspec.Struct, gc=False):
    v: int
    transfer_id: str
    result: str
    partition: int
    applied_at_us: int
    payment_ref: str


_OUTCOME_ENCODER: Final = msgspec.json.Encoder()


def encode_outcome_fast(outcome: TransferOutcome) -> bytes:
    """The document ``payplane_contracts.ledger_messages.encode_outcome`` writes (same fields and
    values; key order aside), built in C: the writer publishes one per transfer."""
    return _OUTCOME_ENCODER.encode(
        _OutcomeDocument(
            SCHEMA_VERSION,
            outcome.transfer_id,
            outcome.result,
            outcome.partition,
            outcome.applied_at_us,
            outcome.payment_ref,
        )
    )


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    type: CommandType
    body: msgspec.Raw


_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_Envelope)


def decode_command_bytes(raw: bytes | None) -> AccountSpec | TransferRequest:
    """A record of the commands topic as the typed command it carries.

    Raises ``MessageError`` (bad envelope) or ``RequestDecodeError`` (bad body), exactly as the
    reference decoders would."""
    if raw is not None and len(raw) <= MESSAGE_BYTES_MAX:
        try:
            envelope = _ENVELOPE_DECODER.decode(raw)
            if envelope.v == SCHEMA_VERSION and envelope.type is CommandType.TRANSFER:
                return _REQUEST_DECODER.decode(envelope.body)
        except msgspec.MsgspecError:
            pass  # the reference path below gives the precise answer
    message = decode_command(raw)
    if message.type is CommandType.CREATE_ACCOUNT:
        return account_spec_from_dict(message.body)
    return request_from_dict(message.body)


def request_from_dict(raw: object) -> TransferRequest:
    """Strict and table-driven: this runs once per ledger command, so it stays lean."""
    if not isinstance(raw, dict):
        raise RequestDecodeError("(request)", "must be a JSON object")
    if not raw.keys() <= _FIELD_NAMES:
        raise RequestDecodeError(sorted(raw.keys() - _FIELD_NAMES)[0], "unknown field")
    if "id" not in raw or "mode" not in raw:
        raise RequestDecodeError("id" if "id" not in raw else "mode", "is required")
    return TransferRequest(**{name: _DECODERS[name](name, value) for name, value in raw.items()})


def _enum_decoder(members: dict[str, Any]) -> Any:
    def decode(name: str, value: object) -> object:
        member = members.get(value) if isinstance(value, str) else None
        if member is None:
            raise RequestDecodeError(name, f"must be one of {', '.join(members)}")
        return member

    return decode


def _decode_int(name: str, value: object) -> object:
    if type(value) is not int:  # bool is an int subclass, and floats never carry money
        raise RequestDecodeError(name, "must be an integer (minor units; never a float)")
    return value


def _decode_optional_int(name: str, value: object) -> object:
    return None if value is None else _decode_int(name, value)


def _decode_str(name: str, value: object) -> object:
    if type(value) is not str:
        raise RequestDecodeError(name, "must be a string")
    return value


_DECODERS: dict[str, Any] = dict.fromkeys(_FIELD_ORDER, _decode_str) | {
    "mode": _enum_decoder(_MODES),
    "kind": _enum_decoder(_KINDS),
    "amount_minor": _decode_optional_int,
    "timeout_s": _decode_int,
}


_ACCOUNT_FIELDS = {"id", "currency", "owner", "flags", "overdraft_limit_minor"}
_FLAG_NAMES = {"debits_must_not_exceed_credits", "credits_must_not_exceed_debits", "internal"}


def account_spec_to_dict(spec: AccountSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "currency": spec.currency,
        "owner": spec.owner,
        "flags": sorted(name for name in _FLAG_NAMES if getattr(spec.flags, name)),
        "overdraft_limit_minor": spec.overdraft_limit_minor,
    }


def account_spec_from_dict(raw: object) -> AccountSpec:
    if not isinstance(raw, dict):
        raise RequestDecodeError("(account)", "must be a JSON object")
    unknown = sorted(set(raw) - _ACCOUNT_FIELDS)
    if unknown:
        raise RequestDecodeError(unknown[0], "unknown field")
    for name in ("id", "currency", "owner"):
        if not isinstance(raw.get(name), str):
            raise RequestDecodeError(name, "is required and must be a string")
    if not _CURRENCY.match(raw["currency"]):
        raise RequestDecodeError("currency", "must be an ISO 4217 code of three capital letters")
    flags = raw.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) and f in _FLAG_NAMES for f in flags):
        raise RequestDecodeError("flags", f"must be a list drawn from {', '.join(sorted(_FLAG_NAMES))}")
    overdraft = raw.get("overdraft_limit_minor", 0)
    if not isinstance(overdraft, int) or isinstance(overdraft, bool):
        raise RequestDecodeError("overdraft_limit_minor", "must be an integer (minor units)")
    return AccountSpec(
        id=raw["id"],
        currency=raw["currency"],
        owner=raw["owner"],
        flags=AccountFlags(**dict.fromkeys(flags, True)),
        overdraft_limit_minor=overdraft,
    )
