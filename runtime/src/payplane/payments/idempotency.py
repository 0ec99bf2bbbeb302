"""The idempotency contract, as pure decisions (the gateway and worker supply storage).

A client sends ``Idempotency-Key`` with every POST. The first request with a key claims it; its body's
fingerprint is stored with it, and its response once it is complete. Then:

- same key, same body, first request finished   → replay the stored response byte for byte (``REPLAY``)
- same key, same body, first request in flight   → 409 (``IN_FLIGHT``)
- same key, different body (at any time)         → 422 (``BODY_MISMATCH``)
- key never seen, or its retention window passed → proceed and claim it (``PROCEED``)

Keys are scoped by client, so two clients may use the same key without seeing each other's payments.
"""

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

KEY_LENGTH_MAX: Final = 255  # Stripe's limit, which clients already respect
DEFAULT_RETENTION_S: Final = 24 * 60 * 60
# Sorted keys, no whitespace, UTF-8 unescaped: the same bytes as the standard library's
# ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, so fingerprints stored
# by earlier versions still match (a unit test compares the two).
_CANONICAL_JSON: Final = msgspec.json.Encoder(order="sorted")


class IdempotencyKeyError(ValueError):
    """A missing or malformed Idempotency-Key header."""


class Decision(StrEnum):
    PROCEED = "proceed"
    REPLAY = "replay"
    IN_FLIGHT = "in_flight"
    BODY_MISMATCH = "body_mismatch"


@dataclass(frozen=True)
class StoredKey:
    fingerprint: str
    claimed_at_s: float
    response: bytes | None = None  # None while the first request is still being processed
    status_code: int | None = None


def validate_key(key: str | None) -> str:
    if key is None or key == "":
        raise IdempotencyKeyError("the Idempotency-Key header is required on every POST")
    if len(key) > KEY_LENGTH_MAX:
        raise IdempotencyKeyError(f"the Idempotency-Key header must be at most {KEY_LENGTH_MAX} characters")
    if not key.isprintable() or not key.isascii():
        raise IdempotencyKeyError("the Idempotency-Key header must be printable ASCII")
    return key


def fingerprint(method: str, path: str, body: object) -> str:
    """SHA-256 of the canonical request: key order and whitespace in the JSON body do not matter."""
    return hashlib.sha256(_CANONICAL_JSON.encode([method.upper(), path, body])).hexdigest()


def decide(stored: StoredKey | None, request_fingerprint: str, now_s: float, retention_s: float) -> Decision:
    if stored is None or now_s - stored.claimed_at_s >= retention_s:
        return Decision.PROCEED
    if stored.fingerprint != request_fingerprint:
        return Decision.BODY_MISMATCH
    if stored.response is None:
        return Decision.IN_FLIGHT
    return Decision.REPLAY
