"""Transfer requests as JSON-ready dicts: how they are stored (``request`` columns) and compared.

Decoding is strict: unknown fields, wrong types or unknown enum values raise ``RequestDecodeError``
with the field's name, so a bad command can be dead-lettered with a precise reason.
"""

import re
from dataclasses import fields
from typing import Any

from payplane.ledger.model import AccountFlags, AccountSpec, TransferKind, TransferMode, TransferRequest

_CURRENCY = re.compile(r"^[A-Z]{3}$")

_INT_FIELDS = {"timeout_s"}
_OPTIONAL_INT_FIELDS = {"amount_minor"}
_ENUM_FIELDS: dict[str, type[TransferMode] | type[TransferKind]] = {"mode": TransferMode, "kind": TransferKind}
_FIELD_NAMES = {f.name for f in fields(TransferRequest)}


class RequestDecodeError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def request_to_dict(request: TransferRequest) -> dict[str, Any]:
    return {f.name: getattr(request, f.name) for f in fields(TransferRequest)}


def request_from_dict(raw: object) -> TransferRequest:
    if not isinstance(raw, dict):
        raise RequestDecodeError("(request)", "must be a JSON object")
    unknown = sorted(set(raw) - _FIELD_NAMES)
    if unknown:
        raise RequestDecodeError(unknown[0], "unknown field")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _decode_field(name, value)
    for required in ("id", "mode"):
        if required not in values:
            raise RequestDecodeError(required, "is required")
    return TransferRequest(**values)


def _decode_field(name: str, value: object) -> object:
    if name in _ENUM_FIELDS:
        enum_type = _ENUM_FIELDS[name]
        if not isinstance(value, str):
            raise RequestDecodeError(name, "must be a string")
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum_type)
            raise RequestDecodeError(name, f"must be one of {allowed}") from None
    if name in _INT_FIELDS or name in _OPTIONAL_INT_FIELDS:
        if value is None and name in _OPTIONAL_INT_FIELDS:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestDecodeError(name, "must be an integer (minor units; never a float)")
        return value
    if not isinstance(value, str):
        raise RequestDecodeError(name, "must be a string")
    return value


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
