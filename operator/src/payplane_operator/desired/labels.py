"""Names, labels and owner references of everything the operator creates in Kubernetes."""

from typing import Any, Final

from payplane_contracts.identity import WorkloadRole, service_account_name
from payplane_operator.api.v1alpha1 import API_VERSION, Kind, ObjectMeta
from payplane_operator.settings import FIELD_MANAGER

PART_OF: Final = "payplane"
RAIL_LABEL: Final = "payplane.io/rail"
SHARD_LABEL: Final = "payplane.io/shard"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
CONFIG_HASH_ANNOTATION: Final = "payplane.io/config-hash"


def workload_name(role: WorkloadRole, owner: str) -> str:
    """Deployment, Service, HPA, PDB and service account of one role share the name ``<owner>-<role>``."""
    return service_account_name(role, owner)


def config_map_name(rail: str) -> str:
    return f"{rail}-config"


def selector_labels(role: WorkloadRole, owner: str) -> dict[str, str]:
    """The immutable Deployment selector: never add to it (a changed selector orphans the ReplicaSets)."""
    return {"app.kubernetes.io/name": PART_OF, INSTANCE_LABEL: owner, COMPONENT_LABEL: role.value}


def labels(role: WorkloadRole | None, owner: str, *, rail: str, shard: str | None = None) -> dict[str, str]:
    """``app.kubernetes.io/*`` labels plus the rail (and shard) the object belongs to."""
    result = {
        "app.kubernetes.io/name": PART_OF,
        INSTANCE_LABEL: owner,
        "app.kubernetes.io/part-of": PART_OF,
        MANAGED_BY_LABEL: FIELD_MANAGER,
        RAIL_LABEL: rail,
    }
    if role is not None:
        result[COMPONENT_LABEL] = role.value
    if shard is not None:
        result[SHARD_LABEL] = shard
    return result


def owner_reference(kind: Kind, meta: ObjectMeta) -> dict[str, Any]:
    """The children's controller reference: the garbage collector deletes them with their owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind.value,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    name: str, meta: ObjectMeta, kind: Kind, object_labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": name,
        "namespace": meta.namespace,
        "labels": object_labels,
        "ownerReferences": [owner_reference(kind, meta)],
    }
    if annotations:
        result["annotations"] = annotations
    return result
