"""The idempotency contract's decisions, and the request fingerprint."""

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payplane.payments.idempotency import (
    KEY_LENGTH_MAX,
    Decision,
    IdempotencyKeyError,
    StoredKey,
    decide,
    fingerprint,
    validate_key,
)

FP = fingerprint("POST", "/v1/payments", {"amount": 100, "currency": "EUR"})
DAY_S = 86_400


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    assert fingerprint("post", "/v1/payments", {"currency": "EUR", "amount": 100}) == FP
    assert fingerprint("POST", "/v1/payments", {"amount": 101, "currency": "EUR"}) != FP
    assert fingerprint("POST", "/v1/refunds", {"amount": 100, "currency": "EUR"}) != FP
    assert fingerprint("POST", "/v1/payments", {"amount": 100.0, "currency": "EUR"}) != FP


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_fingerprint_is_the_one_earlier_versions_stored(body: object) -> None:
    """Fingerprints are stored with their keys: the canonical form must stay the standard library's
    sorted, compact, unescaped JSON, or a retry after an upgrade would be refused as a different body."""
    canonical = json.dumps(["POST", "/v1/payments", body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fingerprint("post", "/v1/payments", body) == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    ("stored", "now_s", "expected"),
    [
        (None, 0, Decision.PROCEED),
        (StoredKey(FP, 0), 10, Decision.IN_FLIGHT),
        (StoredKey(FP, 0, b'{"id":"pay_1"}', 201), 10, Decision.REPLAY),
        (StoredKey("other", 0, b"{}", 201), 10, Decision.BODY_MISMATCH),
        (StoredKey("other", 0), 10, Decision.BODY_MISMATCH),
        (StoredKey(FP, 0, b"{}", 201), DAY_S, Decision.PROCEED),
        (StoredKey("other", 0, b"{}", 201), DAY_S + 1, Decision.PROCEED),
    ],
)
def test_decisions(stored: StoredKey | None, now_s: float, expected: Decision) -> None:
    assert decide(stored, FP, now_s, DAY_S) is expected


@pytest.mark.parametrize("bad", [None, "", "k" * (KEY_LENGTH_MAX + 1), "tab\there", "ünïcode"])
def test_bad_keys_are_refused(bad: str | None) -> None:
    with pytest.raises(IdempotencyKeyError, match="Idempotency-Key"):
        validate_key(bad)


def test_good_keys_pass() -> None:
    assert validate_key("order-42:attempt") == "order-42:attempt"
    assert validate_key("k" * KEY_LENGTH_MAX) == "k" * KEY_LENGTH_MAX
