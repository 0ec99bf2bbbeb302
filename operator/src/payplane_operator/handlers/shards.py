"""LedgerShard handlers: reconcile on every change, on resume and on a drift timer; clean up on delete."""

from typing import Any

import kopf

from payplane_operator.api.v1alpha1 import GROUP, VERSION, SecretKey
from payplane_operator.desired.coverage import ShardRange
from payplane_operator.handlers.boundary import controller_of, guarded, settle
from payplane_operator.reconcile.controller import plain

PLURAL = "ledgershards"


def shards_by_rail(
    spec: kopf.Spec, namespace: str | None, name: str, meta: kopf.Meta, **_: Any
) -> dict[Any, Any] | None:
    """Index: (namespace, rail) → the partition ranges of the rail's live shards (for its coverage) and
    their database Secrets (for its payment workers' balance reads)."""
    rail = (spec.get("railRef") or {}).get("name")
    partitions = spec.get("partitions") or {}
    first, last = partitions.get("first"), partitions.get("last")
    if meta.get("deletionTimestamp") or not rail or not isinstance(first, int) or not isinstance(last, int):
        return None
    secret = (spec.get("database") or {}).get("secretRef") or {}
    database = SecretKey(str(secret["name"]), str(secret.get("key") or "dsn")) if secret.get("name") else None
    return {(namespace, rail): ShardRange(name, first, last, database)}


async def shard_changed(namespace: str | None, name: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    settle(await controller_of(memo).shard(str(namespace), name), retry)


async def shard_drift(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    await controller_of(memo).shard(str(namespace), name, wake_related=False)


async def shard_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await guarded(lambda: controller_of(memo).finalize_shard(plain(body)), retry)


def register(registry: kopf.OperatorRegistry, drift_interval_s: float) -> None:
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(shards_by_rail)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)(shard_changed)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)(shard_changed)
    kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)(shard_changed)
    kopf.timer(GROUP, VERSION, PLURAL, interval=drift_interval_s, initial_delay=drift_interval_s, registry=registry)(
        shard_drift
    )
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)(shard_deleted)
