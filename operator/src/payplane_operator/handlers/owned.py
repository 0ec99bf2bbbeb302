"""Children → owners: a change to a Deployment the operator made (its status, a hand edit, a deletion)
wakes its PaymentRail or LedgerShard, which re-reads readiness and restores drift at once."""

from typing import Any

import kopf

from payplane_operator.api.v1alpha1 import API_VERSION, Kind
from payplane_operator.desired.labels import MANAGED_BY_LABEL
from payplane_operator.handlers.boundary import controller_of
from payplane_operator.settings import FIELD_MANAGER

_OWNER_KINDS = {Kind.PAYMENT_RAIL.value: Kind.PAYMENT_RAIL, Kind.LEDGER_SHARD.value: Kind.LEDGER_SHARD}


def deployment_changed(meta: kopf.Meta, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    for owner in meta.get("ownerReferences", []):
        kind = _OWNER_KINDS.get(owner.get("kind", ""))
        if kind is not None and namespace and owner.get("apiVersion") == API_VERSION:
            controller_of(memo).poke(kind, namespace, owner["name"])


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: FIELD_MANAGER}, registry=registry)(
        deployment_changed
    )
