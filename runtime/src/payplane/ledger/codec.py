"""Transfer requests as JSON-ready dicts: how they are stored (``request`` columns) and compared.

Decoding is strict: unknown fields, wrong types or unknown enum values raise ``RequestDecodeError``
with the field's name, so a bad command can be dead-lettered with a precise reason.
"""

import re
from dataclasses import fields
from typing import Any

from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest

_CURRENCY = re.compile(r"^[A-Z]{3}$")

_FIELD_ORDER: tuple[str, ...] = tuple(f.name for f in fields(TransferRequest))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_MODES = {m.value: m for m in TransferMode}
_KINDS = {k.value: k for k in TransferKind}


class RequestDecodeError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def request_to_dict(request: TransferRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in _FIELD_ORDER}


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
