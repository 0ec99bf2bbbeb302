"""Apply an owner's Kubernetes children with server-side apply, remove the ones that must not exist, and
judge the Deployments' readiness from what the API server answers."""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payplane_operator.api.conditions import ConditionType, Reason, not_ok, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.desired.workloads import ChildSet
from payplane_operator.reconcile.outcome import Note, StepResult, failed_step
from payplane_operator.reconcile.ports import Kube
from payplane_operator.resources import ObjectRef
from payplane_operator.settings import WorkloadReadiness

PREREQUISITE_KINDS = frozenset({"ServiceAccount", "ConfigMap"})


@dataclass(frozen=True)
class DeploymentState:
    name: str
    desired: int
    ready_pods: int
    ready: bool
    why: str


def deployment_state(deployment: Mapping[str, Any], readiness: WorkloadReadiness) -> DeploymentState:
    """Observed = the controller has seen the latest spec; available = also its Available condition is True."""
    metadata, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status") or {}
    name = metadata["name"]
    desired = int(spec.get("replicas", 1))
    ready_pods = int(status.get("readyReplicas", 0))
    if int(status.get("observedGeneration", 0)) < int(metadata.get("generation", 1)):
        return DeploymentState(name, desired, ready_pods, False, f"{name}: the controller has not observed it yet")
    if readiness is WorkloadReadiness.OBSERVED:
        return DeploymentState(name, desired, ready_pods, True, f"{name}: observed")
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions", []))
    updated = int(status.get("updatedReplicas", 0))
    if available and updated >= desired:
        return DeploymentState(name, desired, ready_pods, True, f"{name}: {ready_pods}/{desired} ready")
    return DeploymentState(name, desired, ready_pods, False, f"{name}: {ready_pods}/{desired} ready, {updated} updated")


def _owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences", []))


class ChildTracker:
    """Remembers each child's uid, so a child that was deleted by hand and re-created is reported as such."""

    def __init__(self) -> None:
        self._uids: dict[str, dict[ObjectRef, str]] = {}

    def recreated(self, owner_uid: str, ref: ObjectRef, uid: str) -> bool:
        children = self._uids.setdefault(owner_uid, {})
        before = children.get(ref)
        children[ref] = uid
        return before is not None and before != uid

    def forget(self, owner_uid: str) -> None:
        self._uids.pop(owner_uid, None)


async def ensure_children(
    kube: Kube,
    children: ChildSet,
    *,
    owner_uid: str,
    field_manager: str,
    readiness: WorkloadReadiness,
    tracker: ChildTracker,
) -> StepResult:
    notes: list[Note] = []
    deployments: list[DeploymentState] = []
    # What pods need (accounts, configuration) first, then the rest; each wave concurrently.
    first = [m for m in children.apply if m["kind"] in PREREQUISITE_KINDS]
    then = [m for m in children.apply if m["kind"] not in PREREQUISITE_KINDS]
    try:
        for wave in (first, then):
            stored_wave = await asyncio.gather(*(kube.apply(m, field_manager=field_manager) for m in wave))
            for manifest, stored in zip(wave, stored_wave, strict=True):
                ref = ObjectRef.of(manifest)
                if tracker.recreated(owner_uid, ref, stored["metadata"]["uid"]):
                    notes.append(Note.warning("ChildRestored", f"re-created {ref} (it had been deleted)"))
                if manifest["kind"] == "Deployment":
                    deployments.append(deployment_state(stored, readiness))
        for ref in children.absent:
            existing = await kube.get(ref)
            if existing is not None and _owned_by(existing, owner_uid):
                await kube.delete(ref, uid=existing["metadata"]["uid"])
                notes.append(Note.normal("ChildRemoved", f"deleted {ref} (no longer wanted by the spec)"))
    except ClientError as error:
        return failed_step(ConditionType.WORKLOADS_READY, Reason.KUBERNETES_ERROR, error, "applying the workloads")
    details = {"desired": sum(d.desired for d in deployments), "ready": sum(d.ready_pods for d in deployments)}
    waiting = [d.why for d in deployments if not d.ready]
    if waiting:
        condition = not_ok(ConditionType.WORKLOADS_READY, Reason.PROGRESSING, "; ".join(waiting))
    else:
        names = ", ".join(d.name for d in deployments)
        condition = ok(
            ConditionType.WORKLOADS_READY,
            Reason.APPLIED,
            f"{len(children.apply)} objects applied; deployments ready: {names}",
        )
    return StepResult(condition, notes, details=details)
