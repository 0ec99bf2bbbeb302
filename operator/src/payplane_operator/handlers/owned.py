"""Children → owners: a change to a Deployment the operator made wakes its PaymentRail or LedgerShard: a
status-only change for the light readiness pass, a hand edit or a deletion for the full reconcile, which
restores the drift at once."""

from typing import Any

import kopf

from payplane_operator.api.v1alpha1 import API_VERSION, Kind
from payplane_operator.desired.labels import MANAGED_BY_LABEL
from payplane_operator.handlers.boundary import controller_of
from payplane_operator.settings import FIELD_MANAGER

_OWNER_KINDS = {Kind.PAYMENT_RAIL.value: Kind.PAYMENT_RAIL, Kind.LEDGER_SHARD.value: Kind.LEDGER_SHARD}


def deployment_changed(
    type: str | None, body: kopf.Body, meta: kopf.Meta, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A change of the Deployment's status only (same incarnation, same spec generation as last applied)
    wakes the owner for the light readiness pass; anything else (deleted, edited, re-created, never
    applied by this process) for the full reconcile."""
    controller = controller_of(memo)
    for owner in meta.get("ownerReferences", []):
        kind = _OWNER_KINDS.get(owner.get("kind", ""))
        if kind is None or not namespace or owner.get("apiVersion") != API_VERSION:
            continue
        if type != "DELETED" and controller.status_only(str(owner.get("uid", "")), body):
            controller.poke_readiness(kind, namespace, owner["name"])
        else:
            controller.poke(kind, namespace, owner["name"])


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: FIELD_MANAGER}, registry=registry)(
        deployment_changed
    )
