"""PaymentRail handlers: reconcile on every change, on resume and on a drift timer; clean up on delete."""

from typing import Any

import kopf

from payplane_operator.api.v1alpha1 import GROUP, VERSION
from payplane_operator.handlers.boundary import controller_of, guarded, settle
from payplane_operator.reconcile.controller import RailName, plain

PLURAL = "paymentrails"


def _live(meta: Any) -> bool:
    return not meta.get("deletionTimestamp")


def rails(body: kopf.Body, namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> dict[Any, Any] | None:
    """Index: (namespace, name) → the rail's body, for its shards (image, partition count)."""
    return {(namespace, name): plain(body)} if _live(meta) else None


def rails_by_name(namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> dict[Any, Any] | None:
    """Index: name → every rail of that name (topic names carry only the name; the oldest rail owns them)."""
    return {name: RailName(str(meta.get("creationTimestamp", "")), str(namespace))} if _live(meta) else None


def rails_by_policy(
    spec: kopf.Spec, namespace: str | None, name: str, meta: kopf.Meta, **_: Any
) -> dict[Any, Any] | None:
    """Index: (namespace, policy) → the rails that deliver that FraudPolicy."""
    policy = (spec.get("fraudPolicyRef") or {}).get("name")
    return {(namespace, policy): name} if policy and _live(meta) else None


async def rail_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    settle(await controller_of(memo).rail(str(namespace), name), retry)


async def rail_drift(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    await controller_of(memo).rail(str(namespace), name, wake_related=False)


async def rail_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await guarded(lambda: controller_of(memo).finalize_rail(plain(body)), retry)


def register(registry: kopf.OperatorRegistry, drift_interval_s: float) -> None:
    for index in (rails, rails_by_name, rails_by_policy):
        kopf.index(GROUP, VERSION, PLURAL, registry=registry)(index)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)(rail_changed)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)(rail_changed)
    kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)(rail_changed)
    kopf.timer(GROUP, VERSION, PLURAL, interval=drift_interval_s, initial_delay=drift_interval_s, registry=registry)(
        rail_drift
    )
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)(rail_deleted)
