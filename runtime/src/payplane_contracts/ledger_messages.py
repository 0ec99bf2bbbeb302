"""The ledger's wire messages: commands to the ledger writers and their results, as versioned JSON.

Producers (the payment worker, the writers themselves for cross-partition legs) and consumers (the
ledger writers, the payment worker reading results) agree on these envelopes. The body of a command is
validated field by field by the ledger (``payplane.ledger.codec``); this module only guarantees the
envelope: a JSON object with a known schema version and a known command type.
"""

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple

import msgspec

SCHEMA_VERSION: Final = 1
MESSAGE_BYTES_MAX: Final = 64 * 1024


class CommandType(StrEnum):
    CREATE_ACCOUNT = "create_account"
    TRANSFER = "transfer"


class MessageError(ValueError):
    """A message that cannot be processed as sent; the reason is stored with its dead letter."""


@dataclass(frozen=True)
class LedgerCommand:
    type: CommandType
    body: dict[str, Any]


class TransferOutcome(NamedTuple):
    """What the ledger decided about one transfer, published for the payment worker.

    A NamedTuple: a writer makes one per transfer, and a tuple is several times cheaper to build than a
    frozen dataclass."""

    transfer_id: str
    result: str  # a payplane.ledger.results.TransferResult value
    partition: int
    applied_at_us: int
    payment_ref: str = ""


# Sorted keys, no whitespace, UTF-8: the standard library's ``json.dumps(..., sort_keys=True,
# separators=(",", ":"))`` except that text outside ASCII is written as UTF-8, not escaped (the same JSON)
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def _dumps(value: dict[str, Any]) -> bytes:
    return _ENCODER.encode(value)


def encode_command(command: LedgerCommand) -> bytes:
    return _dumps({"v": SCHEMA_VERSION, "type": command.type.value, "body": command.body})


def decode_command(raw: bytes | None) -> LedgerCommand:
    envelope = _decode_envelope(raw)
    kind = envelope.get("type")
    try:
        command_type = CommandType(str(kind))
    except ValueError:
        raise MessageError(f"unknown command type {kind!r}") from None
    body = envelope.get("body")
    if not isinstance(body, dict):
        raise MessageError("body must be a JSON object")
    return LedgerCommand(command_type, body)


def encode_outcome(outcome: TransferOutcome) -> bytes:
    return _dumps({"v": SCHEMA_VERSION, **outcome._asdict()})


def decode_outcome(raw: bytes | None) -> TransferOutcome:
    envelope = _decode_envelope(raw)
    try:
        return TransferOutcome(
            transfer_id=str(envelope["transfer_id"]),
            result=str(envelope["result"]),
            partition=int(envelope["partition"]),
            applied_at_us=int(envelope["applied_at_us"]),
            payment_ref=str(envelope.get("payment_ref", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed transfer outcome: {exc}") from None


def _decode_envelope(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise MessageError("empty message (no value)")
    if len(raw) > MESSAGE_BYTES_MAX:
        raise MessageError(f"message of {len(raw)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MessageError("message must be a JSON object")
    version = envelope.get("v")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema version {version!r} (this writer speaks {SCHEMA_VERSION})")
    return envelope
