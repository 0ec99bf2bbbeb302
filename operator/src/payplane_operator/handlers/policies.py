"""FraudPolicy handlers: validate and version on every change and on a drift timer; wake the rails that
deliver it. No finalizer: a policy leaves nothing outside Kubernetes behind."""

from typing import Any

import kopf

from payplane_operator.api.v1alpha1 import GROUP, VERSION
from payplane_operator.handlers.boundary import controller_of, settle
from payplane_operator.reconcile.controller import plain
from payplane_operator.reconcile.policy import policy_view

PLURAL = "fraudpolicies"


def policies(body: kopf.Body, namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> dict[Any, Any] | None:
    """Index: (namespace, name) → the policy's validity, version and spec, for the rails that use it."""
    return None if meta.get("deletionTimestamp") else {(namespace, name): policy_view(plain(body))}


async def policy_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    settle(await controller_of(memo).policy(str(namespace), name), retry)


async def policy_drift(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    await controller_of(memo).policy(str(namespace), name, wake_related=False)


def policy_event(type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted policy wakes the rails that referenced it, so their PolicyValid condition says so."""
    if type == "DELETED" and namespace:
        controller_of(memo).wake_policy_users(namespace, name)


def register(registry: kopf.OperatorRegistry, drift_interval_s: float) -> None:
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(policies)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)(policy_changed)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)(policy_changed)
    kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)(policy_changed)
    kopf.timer(GROUP, VERSION, PLURAL, interval=drift_interval_s, initial_delay=drift_interval_s, registry=registry)(
        policy_drift
    )
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(policy_event)
