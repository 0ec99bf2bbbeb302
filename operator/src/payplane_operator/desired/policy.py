"""A FraudPolicy's version (a content hash) and the document delivered to the payment workers."""

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

VERSION_HEX_DIGITS: Final = 16


def policy_version(raw_spec: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-256 of the spec's canonical JSON: equal specs, equal versions."""
    canonical = json.dumps(raw_spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:VERSION_HEX_DIGITS]


def policy_document(name: str, raw_spec: Mapping[str, Any]) -> dict[str, Any]:
    """What lands in the rail's ConfigMap as ``fraud-policy.json``: the spec as written, with its version."""
    return {"name": name, "version": policy_version(raw_spec), "spec": dict(raw_spec)}
