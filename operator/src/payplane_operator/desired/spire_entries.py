"""SPIRE registration entries for a rail's or a shard's workloads.

One entry per workload role and owner. The SPIFFE ID comes from ``payplane_contracts.identity``
(``spiffe://<td>/ns/<namespace>/sa/<owner>-<role>``), the one function the gRPC servers authorize with.
The entry ID is derived from the owner (``payplane.<namespace>.<kind>.<name>.<role>``), so creating is
idempotent, a lost entry is found by ID, and deletion needs no listing.

Selectors:
- cluster mode: ``k8s:ns:<namespace>`` and ``k8s:sa:<service account>`` (the k8s workload attestor);
- local mode: ``unix:gid:<gid>`` where the gid is ``payplane_contracts.identity.local_gid`` of the
  SPIFFE ID, the gid ``payplane.devinfra.local_identity`` starts the local workload with.
"""

from typing import Final

from payplane_contracts.identity import WorkloadRole, local_gid, workload_spiffe_id
from payplane_operator.api.v1alpha1 import Kind, ObjectMeta
from payplane_operator.desired.labels import workload_name
from payplane_operator.resources import EntrySpec, Selector
from payplane_operator.settings import IdentityMode, SpireConfig

RAIL_ROLES: Final = (WorkloadRole.GATEWAY, WorkloadRole.PAYMENT_WORKER)
SHARD_ROLES: Final = (WorkloadRole.LEDGER_WRITER,)
ENTRY_ID_PREFIX: Final = "payplane"
# Roles reached through a Service get its cluster DNS name in their certificate too.
_SERVED_ROLES: Final = frozenset({WorkloadRole.GATEWAY, WorkloadRole.PAYMENT_WORKER})


def entry_id(kind: Kind, meta: ObjectMeta, role: WorkloadRole) -> str:
    return f"{ENTRY_ID_PREFIX}.{meta.namespace}.{kind.value.lower()}.{meta.name}.{role.value}"


def _selectors(mode: IdentityMode, namespace: str, service_account: str, spiffe_id: str) -> tuple[Selector, ...]:
    if mode is IdentityMode.LOCAL:
        return (Selector("unix", f"gid:{local_gid(spiffe_id)}"),)
    return tuple(sorted((Selector("k8s", f"ns:{namespace}"), Selector("k8s", f"sa:{service_account}"))))


def workload_entries(kind: Kind, meta: ObjectMeta, spire: SpireConfig) -> list[EntrySpec]:
    """The entries of every workload role ``kind`` runs (gateway + payment worker, or ledger writer)."""
    roles = RAIL_ROLES if kind is Kind.PAYMENT_RAIL else SHARD_ROLES
    entries = []
    for role in roles:
        spiffe_id = str(workload_spiffe_id(spire.trust_domain, role, meta.namespace, meta.name))
        service_account = workload_name(role, meta.name)
        dns = (f"{service_account}.{meta.namespace}.svc",) if role in _SERVED_ROLES else ()
        entries.append(
            EntrySpec(
                entry_id=entry_id(kind, meta, role),
                spiffe_id=spiffe_id,
                parent_id=spire.parent_id,
                selectors=_selectors(spire.mode, meta.namespace, service_account, spiffe_id),
                dns_names=dns,
                hint=role.value,
            )
        )
    return entries
