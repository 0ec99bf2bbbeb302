"""The operator's one entry into reconciliation: every trigger (kopf handlers, drift timers, wake-ups from
related objects) calls a method here, which serialises per object, gathers the context from the indexes,
reconciles, and posts the events.

Cross-object wake-ups are one level deep: a change a kopf handler saw wakes the related objects (a shard →
its rail; a rail → its shards; a policy → the rails that use it; a Deployment → its owner); reconciles
started by a wake-up wake nobody, so two objects can never wake each other forever.
"""

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from payplane_operator.api.v1alpha1 import API_VERSION, Kind, parse_meta
from payplane_operator.desired.coverage import ShardRange
from payplane_operator.limits import LIVENESS_STALE_INTERVALS, POKE_DEBOUNCE_S, POKE_WORKERS, POLICY_ROLLOUT_CHECKS_S
from payplane_operator.reconcile import rail as rail_rec
from payplane_operator.reconcile import shard as shard_rec
from payplane_operator.reconcile.outcome import EventType, Note, Outcome
from payplane_operator.reconcile.policy import reconcile_policy
from payplane_operator.reconcile.ports import Deps
from payplane_operator.reconcile.queue import KeyedLocks, Pokes
from payplane_operator.reconcile.rail import PolicyView, RailContext
from payplane_operator.reconcile.workloads import ChildTracker
from payplane_operator.resources import ObjectRef

log = logging.getLogger(__name__)
Body = Mapping[str, Any]
NsName = tuple[str, str]
Key = tuple[Kind, str, str]
Wake = tuple[Kind, str, str, bool]  # the object, and whether the light (readiness-only) pass may do
EVENT_COMPONENT = "payplane-operator"
T = TypeVar("T")
NOTHING = Outcome(status={}, notes=[], retry=False, ready=False)  # the object is gone: nothing to do


@dataclass(frozen=True)
class RailName:
    """One rail of a given name (for topic-name ownership: topics are named by rail name only)."""

    created: str
    namespace: str


@dataclass
class Indexes:
    """Read-only views the kopf indexes provide: key → the values indexed under it."""

    rails: Mapping[NsName, Iterable[Body]]
    rails_by_name: Mapping[str, Iterable[RailName]]
    shards_by_rail: Mapping[NsName, Iterable[ShardRange]]
    policies: Mapping[NsName, Iterable[PolicyView]]
    rails_by_policy: Mapping[NsName, Iterable[str]]


def _values(index: Mapping[Any, Iterable[T]], key: Any) -> list[T]:
    return list(index[key]) if key in index else []


def _log_reconcile(
    kind: Kind, namespace: str, name: str, outcome: Outcome, started: float, *, light: bool = False
) -> None:
    """INFO when something changed (there are events to post), DEBUG for the quiet level-based passes."""
    level = logging.INFO if outcome.notes else logging.DEBUG
    log.log(
        level,
        "%s %s %s/%s in %.0f ms: phase %s, %d changes%s",
        "refreshed readiness of" if light else "reconciled",
        kind.value,
        namespace,
        name,
        (time.monotonic() - started) * 1000,
        outcome.status.get("phase", "-"),
        len(outcome.notes),
        ", will retry" if outcome.retry else "",
    )


def plain(body: Body) -> dict[str, Any]:
    """A detached copy of an object body (kopf hands out live views)."""
    return copy.deepcopy({key: body[key] for key in body})


class Controller:
    def __init__(self, deps: Deps, indexes: Indexes) -> None:
        self.deps = deps
        self.indexes = indexes
        self._locks: KeyedLocks[Key] = KeyedLocks()
        self._tracker = ChildTracker()
        self._pokes: Pokes[Wake] = Pokes(self._woken, workers=POKE_WORKERS, debounce_s=POKE_DEBOUNCE_S)
        self.last_reconcile_s = time.monotonic()
        self._rollouts: dict[NsName, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._pokes.start()

    async def stop(self) -> None:
        rollouts, self._rollouts = list(self._rollouts.values()), {}
        for task in rollouts:
            task.cancel()
        for task in rollouts:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pokes.stop()

    # --- what the handlers call -------------------------------------------------------------------------

    async def rail(self, namespace: str, name: str, *, wake_related: bool = True) -> Outcome:
        async with self._locks((Kind.PAYMENT_RAIL, namespace, name)):
            body = await self._current(Kind.PAYMENT_RAIL, namespace, name)
            if body is None:
                return NOTHING
            started = time.monotonic()
            outcome = await rail_rec.reconcile_rail(body, self._rail_context(body), self.deps, self._tracker)
            await self._post(body, outcome.notes)
            self._record(Kind.PAYMENT_RAIL, namespace, name, outcome, started)
            delivered = outcome.status.get("fraudPolicy")
            if delivered and delivered != (body.get("status") or {}).get("fraudPolicy"):
                self._follow_rollout(namespace, str(delivered["name"]))
        if wake_related:
            for shard in _values(self.indexes.shards_by_rail, (namespace, name)):
                self.poke(Kind.LEDGER_SHARD, namespace, shard.name)
        return outcome

    async def shard(self, namespace: str, name: str, *, wake_related: bool = True) -> Outcome:
        async with self._locks((Kind.LEDGER_SHARD, namespace, name)):
            body = await self._current(Kind.LEDGER_SHARD, namespace, name)
            if body is None:
                return NOTHING
            rail_name = str((body.get("spec") or {}).get("railRef", {}).get("name", ""))
            rails = _values(self.indexes.rails, (namespace, rail_name))
            started = time.monotonic()
            outcome = await shard_rec.reconcile_shard(body, rails[0] if rails else None, self.deps, self._tracker)
            await self._post(body, outcome.notes)
            self._record(Kind.LEDGER_SHARD, namespace, name, outcome, started)
        if wake_related and rail_name:
            self.poke(Kind.PAYMENT_RAIL, namespace, rail_name)
        return outcome

    async def policy(self, namespace: str, name: str, *, wake_related: bool = True) -> Outcome:
        async with self._locks((Kind.FRAUD_POLICY, namespace, name)):
            body = await self._current(Kind.FRAUD_POLICY, namespace, name)
            if body is None:
                return NOTHING
            started = time.monotonic()
            rails = _values(self.indexes.rails_by_policy, (namespace, name))
            outcome = await reconcile_policy(body, self.deps, rails)
            await self._post(body, outcome.notes)
            self._record(Kind.FRAUD_POLICY, namespace, name, outcome, started)
        if wake_related:
            self.wake_policy_users(namespace, name)
        return outcome

    def _follow_rollout(self, namespace: str, policy: str) -> None:
        """A rail delivered a new version of ``policy``: re-read its workers' versions a few times while
        they reload it (one schedule per policy; a newer delivery restarts it)."""
        key = (namespace, policy)
        previous = self._rollouts.pop(key, None)
        if previous is not None:
            previous.cancel()

        async def follow() -> None:
            for delay_s in POLICY_ROLLOUT_CHECKS_S:
                await asyncio.sleep(delay_s)
                self.poke(Kind.FRAUD_POLICY, namespace, policy)

        task = asyncio.create_task(follow())
        self._rollouts[key] = task
        task.add_done_callback(lambda done: self._rollouts.pop(key, None) if self._rollouts.get(key) is done else None)

    def wake_policy_users(self, namespace: str, policy: str) -> None:
        for rail_name in _values(self.indexes.rails_by_policy, (namespace, policy)):
            self.poke(Kind.PAYMENT_RAIL, namespace, rail_name)

    async def finalize_rail(self, body: Body) -> None:
        meta = parse_meta(body)
        async with self._locks((Kind.PAYMENT_RAIL, meta.namespace, meta.name)):
            notes = await rail_rec.finalize_rail(body, self.deps, owns_topics=self._owns_topics(body))
            await self._post(body, notes)
        self._forget(Kind.PAYMENT_RAIL, meta.namespace, meta.name, meta.uid)
        for shard in _values(self.indexes.shards_by_rail, (meta.namespace, meta.name)):
            self.poke(Kind.LEDGER_SHARD, meta.namespace, shard.name)

    async def finalize_shard(self, body: Body) -> None:
        meta = parse_meta(body)
        async with self._locks((Kind.LEDGER_SHARD, meta.namespace, meta.name)):
            await self._post(body, await shard_rec.finalize_shard(body, self.deps))
        self._forget(Kind.LEDGER_SHARD, meta.namespace, meta.name, meta.uid)
        rail_name = str((body.get("spec") or {}).get("railRef", {}).get("name", ""))
        if rail_name:
            self.poke(Kind.PAYMENT_RAIL, meta.namespace, rail_name)

    def poke(self, kind: Kind, namespace: str, name: str) -> None:
        self._pokes.poke((kind, namespace, name, False))

    def poke_readiness(self, kind: Kind, namespace: str, name: str) -> None:
        """Wake a rail or shard whose Deployment changed only its status: the light pass re-judges
        readiness without re-applying anything (it falls back to the full reconcile when unsure)."""
        self._pokes.poke((kind, namespace, name, True))

    def status_only(self, owner_uid: str, child: Body) -> bool:
        """The child is the incarnation and spec generation this process last applied for that owner."""
        return self._tracker.unchanged(owner_uid, ObjectRef.of(child), child)

    async def refresh(self, kind: Kind, namespace: str, name: str) -> Outcome:
        """The light pass for a rail or shard, or the full reconcile when the light one declines."""
        refresh = rail_rec.refresh_rail if kind is Kind.PAYMENT_RAIL else shard_rec.refresh_shard
        async with self._locks((kind, namespace, name)):
            body = await self._current(kind, namespace, name)
            if body is None:
                return NOTHING
            started = time.monotonic()
            outcome = await refresh(body, self.deps, self._tracker)
            if outcome is not None:
                await self._post(body, outcome.notes)
                self._record(kind, namespace, name, outcome, started, light=True)
                return outcome
        if kind is Kind.PAYMENT_RAIL:
            return await self.rail(namespace, name, wake_related=False)
        return await self.shard(namespace, name, wake_related=False)

    def healthy(self, objects: int, drift_interval_s: float) -> tuple[bool, str]:
        """Unhealthy when objects exist but nothing was reconciled for several drift intervals."""
        idle_s = time.monotonic() - self.last_reconcile_s
        if objects and idle_s > LIVENESS_STALE_INTERVALS * drift_interval_s:
            return False, f"{objects} objects, none reconciled for {idle_s:.0f} s"
        return True, f"{objects} objects; last reconcile {idle_s:.1f} s ago; {self._pokes.pending} wake-ups pending"

    # --- internals --------------------------------------------------------------------------------------

    def _rail_context(self, body: Body) -> RailContext:
        meta = parse_meta(body)
        policy_name = ((body.get("spec") or {}).get("fraudPolicyRef") or {}).get("name")
        policies = _values(self.indexes.policies, (meta.namespace, policy_name)) if policy_name else []
        owner = self._topic_owner(meta.name)
        return RailContext(
            shards=sorted(_values(self.indexes.shards_by_rail, (meta.namespace, meta.name))),
            policy=policies[0] if policies else None,
            topics_owned_by=owner if owner not in {None, meta.namespace} else None,
        )

    def _topic_owner(self, rail_name: str) -> str | None:
        """The namespace of the oldest rail with this name: its rail owns the topic names."""
        candidates = sorted(_values(self.indexes.rails_by_name, rail_name), key=lambda r: (r.created, r.namespace))
        return candidates[0].namespace if candidates else None

    def _owns_topics(self, body: Body) -> bool:
        meta = parse_meta(body)
        owner = self._topic_owner(meta.name)
        return owner in {None, meta.namespace}

    def _record(
        self, kind: Kind, namespace: str, name: str, outcome: Outcome, started: float, *, light: bool = False
    ) -> None:
        _log_reconcile(kind, namespace, name, outcome, started, light=light)
        self.deps.metrics.reconciled(
            kind.value,
            (namespace, name),
            ready=outcome.ready,
            retry=outcome.retry,
            seconds=time.monotonic() - started,
            light=light,
        )

    async def _current(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it now (whatever triggered us may have seen an older version,
        and our own last status write with it). None when it is gone or being deleted: its finalizer acts."""
        body = await self.deps.kube.get(ObjectRef(API_VERSION, kind.value, namespace, name))
        if body is None or parse_meta(body).deleting:
            self.deps.metrics.forget(kind.value, (namespace, name))
            return None
        self.last_reconcile_s = time.monotonic()
        return body

    async def _woken(self, key: Wake) -> None:
        kind, namespace, name, light = key
        if light and kind is not Kind.FRAUD_POLICY:
            await self.refresh(kind, namespace, name)
        elif kind is Kind.PAYMENT_RAIL:
            await self.rail(namespace, name, wake_related=False)
        elif kind is Kind.LEDGER_SHARD:
            await self.shard(namespace, name, wake_related=False)
        else:
            await self.policy(namespace, name, wake_related=False)

    async def _post(self, body: Body, notes: Iterable[Note]) -> None:
        for note in notes:
            if note.type is EventType.WARNING:  # what went wrong is in the log too, not only in Events
                meta = body["metadata"]
                log.warning(
                    "%s %s/%s: %s: %s", body["kind"], meta["namespace"], meta["name"], note.reason, note.message
                )
            try:
                await self.deps.kube.post_event(
                    body,
                    event_type=note.type.value,
                    reason=note.reason,
                    message=note.message,
                    component=EVENT_COMPONENT,
                )
            except Exception:
                log.warning("could not post event %s on %s", note.reason, body["metadata"]["name"], exc_info=True)

    def _forget(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        self._locks.forget((kind, namespace, name))
        self._tracker.forget(uid)
        self.deps.metrics.forget(kind.value, (namespace, name))
