"""Transfer requests as JSON-ready dicts: how they are stored (``request`` columns) and compared.

Decoding is strict: unknown fields, wrong types or unknown enum values raise ``RequestDecodeError``
with the field's name, so a bad command can be dead-lettered with a precise reason.
"""

from dataclasses import fields
from typing import Any

from payplane.ledger.model import TransferKind, TransferMode, TransferRequest

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
