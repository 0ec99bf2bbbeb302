"""Whether the Secrets an object names exist and hold their keys (values are never read out or logged).

The operator may only ``get`` Secrets (no list or watch, see the chart's ClusterRole), so a Secret created
after the object is noticed by the retry with backoff that a missing one asks for, or the drift timer.
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from payplane_operator.api.conditions import ConditionType, Reason, not_ok, ok
from payplane_operator.api.v1alpha1 import SecretKey
from payplane_operator.clients.errors import ClientError
from payplane_operator.reconcile.outcome import StepResult, failed_step
from payplane_operator.reconcile.ports import Kube
from payplane_operator.resources import ObjectRef


def missing(secret: Mapping[str, Any] | None, ref: SecretKey, namespace: str) -> tuple[Reason, str] | None:
    """Why ``secret`` (as the API server returned it, or None) does not serve ``ref``; None if it does."""
    if secret is None:
        return Reason.SECRET_NOT_FOUND, f"Secret {ref.name} does not exist in namespace {namespace}"
    data = secret.get("data") or {}
    if not data.get(ref.key):
        keys = ", ".join(sorted(data)) or "none"
        return Reason.SECRET_KEY_MISSING, f"Secret {ref.name} has no (non-empty) key {ref.key}; its keys: {keys}"
    return None


async def check_secrets(
    kube: Kube, namespace: str, refs: Sequence[SecretKey], condition_type: ConditionType
) -> StepResult:
    """One condition for all of ``refs``: True when every Secret holds its key, else the first problem's
    reason and every problem in the message. A missing Secret is waited for (retry with backoff)."""
    try:
        found = await asyncio.gather(*(kube.get(ObjectRef("v1", "Secret", namespace, r.name)) for r in refs))
    except ClientError as error:
        return failed_step(condition_type, Reason.KUBERNETES_ERROR, error, "reading the Secrets the spec names")
    problems = [p for secret, ref in zip(found, refs, strict=True) if (p := missing(secret, ref, namespace))]
    if problems:
        message = "; ".join(text for _, text in problems)
        return StepResult(not_ok(condition_type, problems[0][0], message), retry=True)
    names = ", ".join(f"{r.name}/{r.key}" for r in refs)
    return StepResult(ok(condition_type, Reason.SECRETS_FOUND, f"Secret keys present: {names}"))
