"""Apply an owner's Kubernetes children with server-side apply, remove the ones that must not exist, and
judge the Deployments' readiness from what the API server answers.

An object that already has a child's name but is not the owner's is never overwritten: a child this
process has not applied yet is read first, and one controlled by something else, or made by someone
else, is left alone and named in ``WorkloadsReady`` (reason ``ResourceConflict``). An orphan of an
earlier owner of the same name (no controller, the operator's ``managed-by`` and ``instance`` labels) is
adopted."""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.desired.labels import INSTANCE_LABEL, MANAGED_BY_LABEL
from payplane_operator.desired.workloads import ChildSet
from payplane_operator.reconcile.outcome import Note, StepResult, failed_step
from payplane_operator.reconcile.ports import Kube
from payplane_operator.resources import Manifest, ObjectRef
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


@dataclass(frozen=True)
class Applied:
    """A child as this process last applied it: which incarnation (uid), at which spec (generation)."""

    uid: str
    generation: int


def applied_of(stored: Mapping[str, Any]) -> Applied:
    metadata = stored["metadata"]
    return Applied(str(metadata.get("uid", "")), int(metadata.get("generation", 0)))


class ChildTracker:
    """Remembers each child as last applied, so a child deleted by hand and re-created is reported as
    such, and a change that is only the child's status is told from one to its spec or identity."""

    def __init__(self) -> None:
        self._applied: dict[str, dict[ObjectRef, Applied]] = {}

    def recreated(self, owner_uid: str, ref: ObjectRef, stored: Mapping[str, Any]) -> bool:
        children = self._applied.setdefault(owner_uid, {})
        before = children.get(ref)
        children[ref] = now = applied_of(stored)
        return before is not None and before.uid != now.uid

    def unchanged(self, owner_uid: str, ref: ObjectRef, observed: Mapping[str, Any]) -> bool:
        """``observed`` is the incarnation and spec generation this process last applied (only its
        status, or metadata outside the spec, can differ)."""
        return self._applied.get(owner_uid, {}).get(ref) == applied_of(observed)

    def knows(self, owner_uid: str, ref: ObjectRef) -> bool:
        """This process has applied ``ref`` for this owner (so it is the owner's, not someone else's)."""
        return ref in self._applied.get(owner_uid, {})

    def forget(self, owner_uid: str) -> None:
        self._applied.pop(owner_uid, None)


def foreign(existing: Mapping[str, Any], manifest: Manifest) -> str | None:
    """Why the object that has a child's name is not the owner's to apply; None when it is (already
    owned, or an orphan of an earlier owner of this name, which is adopted)."""
    owner = manifest["metadata"]["ownerReferences"][0]
    metadata = existing["metadata"]
    references = metadata.get("ownerReferences", [])
    if any(reference.get("uid") == owner["uid"] for reference in references):
        return None
    ref = ObjectRef.of(manifest)
    controller = next((reference for reference in references if reference.get("controller")), None)
    if controller is not None:
        return f"{ref.kind} {ref.name} belongs to {controller.get('kind')} {controller.get('name')}"
    labels, ours = metadata.get("labels") or {}, manifest["metadata"]["labels"]
    if all(labels.get(key) == ours[key] for key in (MANAGED_BY_LABEL, INSTANCE_LABEL)):
        return None
    return f"{ref.kind} {ref.name} already exists and was not made for {owner['kind']} {owner['name']}"


async def _conflicts(kube: Kube, children: ChildSet, owner_uid: str, tracker: ChildTracker) -> dict[ObjectRef, str]:
    """The children whose names are taken by objects that are not the owner's (read only for children
    this process has not applied yet: after that, the tracker knows them)."""
    unknown = [m for m in children.apply if not tracker.knows(owner_uid, ObjectRef.of(m))]
    found = await asyncio.gather(*(kube.get(ObjectRef.of(m)) for m in unknown))
    return {
        ObjectRef.of(m): why
        for m, existing in zip(unknown, found, strict=True)
        if existing is not None and (why := foreign(existing, m)) is not None
    }


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
        conflicts = await _conflicts(kube, children, owner_uid, tracker)
        first = [m for m in first if ObjectRef.of(m) not in conflicts]
        then = [m for m in then if ObjectRef.of(m) not in conflicts]
        for wave in (first, then):
            stored_wave = await asyncio.gather(*(kube.apply(m, field_manager=field_manager) for m in wave))
            for manifest, stored in zip(wave, stored_wave, strict=True):
                ref = ObjectRef.of(manifest)
                if tracker.recreated(owner_uid, ref, stored):
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
    if conflicts:
        message = "; ".join(conflicts.values()) + ": left untouched; rename the owner, or delete the object"
        condition = not_ok(ConditionType.WORKLOADS_READY, Reason.RESOURCE_CONFLICT, message)
    else:
        condition = readiness_condition(deployments)
    return StepResult(condition, notes, details=pod_counts(deployments))


def readiness_condition(deployments: Sequence[DeploymentState]) -> Condition:
    """WorkloadsReady from the Deployments' states (every child applied)."""
    waiting = [d.why for d in deployments if not d.ready]
    if waiting:
        return not_ok(ConditionType.WORKLOADS_READY, Reason.PROGRESSING, "; ".join(waiting))
    names = ", ".join(d.name for d in deployments)
    return ok(ConditionType.WORKLOADS_READY, Reason.APPLIED, f"children applied; deployments ready: {names}")


def pod_counts(deployments: Sequence[DeploymentState]) -> dict[str, int]:
    return {"desired": sum(d.desired for d in deployments), "ready": sum(d.ready_pods for d in deployments)}
