"""Conditions into status: transition times kept when nothing changed, Ready summarised, phase derived,
and written with server-side apply only when it differs (so a no-op reconcile writes nothing)."""

import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Phase, Reason, not_ok, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.limits import CONDITION_MESSAGE_CHARS_MAX
from payplane_operator.reconcile.outcome import Note
from payplane_operator.reconcile.ports import Kube

log = logging.getLogger(__name__)


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def summarize_ready(conditions: Sequence[Condition], ready_message: str) -> Condition:
    """Ready is True when every dependency is; otherwise it names the ones that are not, failures first."""
    pending = [c for c in conditions if c.status is not True]
    if not pending:
        return ok(ConditionType.READY, Reason.READY, ready_message)
    failures = [c for c in pending if c.failed]
    first = (failures or pending)[0]
    reason = first.reason if failures else Reason.NOT_READY
    waiting = "; ".join(f"{c.type.value}: {c.message}" for c in pending)
    return not_ok(ConditionType.READY, reason, waiting)


def phase_of(conditions: Sequence[Condition]) -> Phase:
    if any(c.reason in {Reason.INVALID_SPEC, Reason.POLICY_INVALID} and c.status is False for c in conditions):
        return Phase.INVALID
    if all(c.status is True for c in conditions):
        return Phase.READY
    if any(c.failed for c in conditions):
        return Phase.DEGRADED
    return Phase.PROVISIONING


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """The new conditions in Kubernetes shape; lastTransitionTime moves only when status changes."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for condition in new:
        before = previous.get(condition.type.value)
        unchanged = before is not None and before.get("status") == condition.status_text
        merged.append(
            {
                "type": condition.type.value,
                "status": condition.status_text,
                "reason": condition.reason.value,
                "message": condition.message[:CONDITION_MESSAGE_CHARS_MAX],
                "lastTransitionTime": before.get("lastTransitionTime", now) if unchanged and before else now,
                "observedGeneration": generation,
            }
        )
    return merged


def transition_notes(old: Sequence[Mapping[str, Any]], new: Sequence[Condition]) -> list[Note]:
    """One event per condition whose status or reason changed: Normal when it became True, else Warning."""
    previous = {c.get("type"): c for c in old}
    notes = []
    for condition in new:
        before = previous.get(condition.type.value)
        if before is not None and (before.get("status"), before.get("reason")) == (
            condition.status_text,
            condition.reason.value,
        ):
            continue
        if before is None and condition.status is not True and not condition.failed:
            continue  # a first "still provisioning" is not news
        text = f"{condition.type.value} is {condition.status_text} ({condition.reason.value}): {condition.message}"
        notes.append(
            Note.normal(condition.reason.value, text)
            if condition.status is True
            else Note.warning(condition.reason.value, text)
        )
    return notes


async def write_status(kube: Kube, body: Mapping[str, Any], status: dict[str, Any], field_manager: str) -> bool:
    """Apply ``status`` on the status subresource unless it equals what the object already shows.

    Returns False only when the write failed (logged): the caller asks for a retry.
    """
    if dict(body.get("status") or {}) == status:
        return True
    metadata = body["metadata"]
    manifest = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
        "status": status,
    }
    try:
        await kube.apply(manifest, field_manager=field_manager, subresource="status")
    except ClientError as error:
        log.warning("could not write the status of %s %s: %s", body["kind"], metadata["name"], error)
        return False
    return True
