"""The light pass: a Deployment's status changed and nothing else, so only WorkloadsReady (and Ready,
phase and the pod counts) can change. It re-reads the owner's Deployments and writes the status if it
differs — no server-side apply of the children, no Kafka, SPIRE or Secret calls.

It declines (returns None, and the caller runs the full reconcile) whenever it cannot be sure that is
enough: the owner's spec is newer than its status, a stored condition is not one it knows, the last full
pass did not end with the children applied (Progressing or Applied), or a Deployment is missing or is not
the incarnation and generation this process last applied.
"""

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Reason
from payplane_operator.clients.errors import ClientError
from payplane_operator.reconcile import status as st
from payplane_operator.reconcile.outcome import Outcome
from payplane_operator.reconcile.ports import Deps
from payplane_operator.reconcile.workloads import ChildTracker, deployment_state, pod_counts, readiness_condition
from payplane_operator.resources import ObjectRef

APPLIED_REASONS = frozenset({Reason.PROGRESSING, Reason.APPLIED})
_STATUS = {"True": True, "False": False, "Unknown": None}


def stored_conditions(stored: Sequence[Mapping[str, Any]]) -> list[Condition] | None:
    """The conditions as the status holds them; None if any is not one this operator writes."""
    conditions = []
    for raw in stored:
        try:
            conditions.append(
                Condition(
                    ConditionType(raw["type"]), _STATUS[raw["status"]], Reason(raw["reason"]), str(raw["message"])
                )
            )
        except (KeyError, ValueError):
            return None
    return conditions


async def refresh_readiness(
    body: Mapping[str, Any],
    deployments: Sequence[ObjectRef],
    *,
    ready_message: str,
    status_fields: Callable[[dict[str, int]], dict[str, Any]],
    deps: Deps,
    tracker: ChildTracker,
) -> Outcome | None:
    metadata, status = body["metadata"], dict(body.get("status") or {})
    generation = int(metadata.get("generation", 0))
    conditions = stored_conditions(status.get("conditions", []))
    if status.get("observedGeneration") != generation or not conditions:
        return None
    workloads = next((c for c in conditions if c.type is ConditionType.WORKLOADS_READY), None)
    if workloads is None or workloads.reason not in APPLIED_REASONS:
        return None
    try:
        found = await asyncio.gather(*(deps.kube.get(ref) for ref in deployments))
    except ClientError:
        return None
    owner_uid = str(metadata["uid"])
    current = [d for d in found if d is not None]
    if len(current) != len(deployments) or not all(
        tracker.unchanged(owner_uid, ref, d) for ref, d in zip(deployments, current, strict=True)
    ):
        return None
    states = [deployment_state(d, deps.config.readiness) for d in current]
    refreshed = readiness_condition(states)
    dependencies = [refreshed if c.type is ConditionType.WORKLOADS_READY else c for c in conditions]
    dependencies = [c for c in dependencies if c.type is not ConditionType.READY]
    new = [st.summarize_ready(dependencies, ready_message), *dependencies]
    old = status["conditions"]
    status.update(
        phase=st.phase_of(new).value,
        conditions=st.merge_conditions(old, new, generation, st.now_text()),
        **status_fields(pod_counts(states)),
    )
    written = await st.write_status(deps.kube, body, status, deps.config.field_manager)
    return Outcome(status=status, notes=st.transition_notes(old, new), retry=not written, ready=new[0].status is True)
