"""Reconcile one LedgerShard: its writers' identities always, its writers once its rail exists and the
shard's partitions lie inside the rail's, and the lag its writers report (read on every full pass, so
at least every drift interval). The rail's coverage condition is the rail reconcile's job."""

import asyncio
from collections.abc import Mapping
from typing import Any

from payplane_contracts.identity import WorkloadRole
from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok, ok
from payplane_operator.api.v1alpha1 import (
    Kind,
    LedgerShard,
    PaymentRail,
    SecretKey,
    parse_meta,
    parse_rail,
    parse_shard,
)
from payplane_operator.desired.coverage import span
from payplane_operator.desired.labels import selector_labels, workload_name
from payplane_operator.desired.spire_entries import workload_entries
from payplane_operator.desired.workloads import shard_children
from payplane_operator.errors import InvalidSpecError
from payplane_operator.reconcile import status as st
from payplane_operator.reconcile.identities import ensure_entries, remove_entries
from payplane_operator.reconcile.observed import lag_fields, observe
from payplane_operator.reconcile.outcome import Note, Outcome, StepResult
from payplane_operator.reconcile.ports import Deps
from payplane_operator.reconcile.rail import write_invalid
from payplane_operator.reconcile.readiness import refresh_readiness
from payplane_operator.reconcile.secrets import check_secrets
from payplane_operator.reconcile.workloads import ChildTracker, ensure_children
from payplane_operator.resources import ObjectRef


def partitions_condition(
    shard: LedgerShard, rail_body: Mapping[str, Any] | None
) -> tuple[Condition, PaymentRail | None]:
    """Whether the shard can run: its rail exists and is valid, and its range lies inside the rail's partitions."""
    name = shard.spec.rail
    if rail_body is None or parse_meta(rail_body).deleting:
        return not_ok(
            ConditionType.PARTITIONS_VALID,
            Reason.RAIL_NOT_FOUND,
            f"PaymentRail {name} does not exist in namespace {shard.meta.namespace}",
        ), None
    try:
        rail = parse_rail(rail_body)
    except InvalidSpecError as error:
        return not_ok(ConditionType.PARTITIONS_VALID, Reason.RAIL_INVALID, f"PaymentRail {name}: {error}"), None
    owned = span(shard.spec.first_partition, shard.spec.last_partition)
    count = rail.spec.ledger_partitions
    if shard.spec.last_partition >= count:
        return not_ok(
            ConditionType.PARTITIONS_VALID,
            Reason.OUTSIDE_RAIL,
            f"partitions {owned} reach beyond rail {name}'s {count} partitions (0-{count - 1})",
        ), rail
    return ok(ConditionType.PARTITIONS_VALID, Reason.WITHIN_RAIL, f"partitions {owned} of rail {name}'s {count}"), rail


async def _waiting_for_rail() -> StepResult:
    return StepResult(
        not_ok(
            ConditionType.WORKLOADS_READY,
            Reason.PROGRESSING,
            "writers are deployed once the shard's partitions are valid",
        )
    )


async def reconcile_shard(
    body: Mapping[str, Any], rail_body: Mapping[str, Any] | None, deps: Deps, tracker: ChildTracker
) -> Outcome:
    try:
        shard = parse_shard(body)
    except InvalidSpecError as error:
        return await write_invalid(deps, body, error)
    config = deps.config
    partitions, rail = partitions_condition(shard, rail_body)
    if rail is not None and partitions.status is True:
        children = shard_children(
            shard, rail, kafka_bootstrap=config.kafka.workload_bootstrap, node_selector=config.node_selector
        )
        workloads_step = ensure_children(
            deps.kube,
            children,
            owner_uid=shard.meta.uid,
            field_manager=config.field_manager,
            readiness=config.readiness,
            tracker=tracker,
        )
    else:
        workloads_step = _waiting_for_rail()
    database = SecretKey(shard.spec.database_secret, shard.spec.database_secret_key)
    workloads, identities, secret, writers = await asyncio.gather(
        workloads_step,
        ensure_entries(deps.spire, workload_entries(Kind.LEDGER_SHARD, shard.meta, config.spire)),
        check_secrets(deps.kube, shard.meta.namespace, [database], ConditionType.DATABASE_SECRET_READY),
        observe(deps, shard.meta.namespace, selector_labels(WorkloadRole.LEDGER_WRITER, shard.meta.name)),
    )
    dependencies = [workloads.condition, identities.condition, partitions, secret.condition]
    conditions = [
        st.summarize_ready(dependencies, ready_message(shard)),
        *dependencies,
    ]
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(WorkloadRole.LEDGER_WRITER, shard.meta.name).items())
    old_conditions = (body.get("status") or {}).get("conditions", [])
    status: dict[str, Any] = {
        "observedGeneration": shard.meta.generation,
        "phase": st.phase_of(conditions).value,
        "conditions": st.merge_conditions(old_conditions, conditions, shard.meta.generation, st.now_text()),
        **_pod_fields(workloads.details),
        "selector": selector,
        "partitionCount": shard.spec.partition_count,
        "identities": identities.details.get("identities", []),
        **lag_fields(shard.spec.first_partition, shard.spec.last_partition, writers or []),
    }
    written = await st.write_status(deps.kube, body, status, config.field_manager)
    steps = [workloads, identities, secret]
    notes = [note for step in steps for note in step.notes] + st.transition_notes(old_conditions, conditions)
    retry = not written or any(s.retry for s in steps)
    return Outcome(status=status, notes=notes, retry=retry, ready=conditions[0].status is True)


def ready_message(shard: LedgerShard) -> str:
    return f"writers of partitions {span(shard.spec.first_partition, shard.spec.last_partition)} are running"


def _pod_fields(counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "replicas": int(counts.get("desired", 0)),
        "writersReady": f"{counts.get('ready', 0)}/{counts.get('desired', 0)}",
    }


async def refresh_shard(body: Mapping[str, Any], deps: Deps, tracker: ChildTracker) -> Outcome | None:
    """The light pass after a status-only change of the writers' Deployment (None: do the full one)."""
    try:
        shard = parse_shard(body)
    except InvalidSpecError:
        return None
    name = workload_name(WorkloadRole.LEDGER_WRITER, shard.meta.name)
    deployment = ObjectRef("apps/v1", "Deployment", shard.meta.namespace, name)
    return await refresh_readiness(
        body, [deployment], ready_message=ready_message(shard), status_fields=_pod_fields, deps=deps, tracker=tracker
    )


async def finalize_shard(body: Mapping[str, Any], deps: Deps) -> list[Note]:
    """The writers' SPIRE entries; the Deployment and the rest go with the shard (owner references)."""
    return await remove_entries(deps.spire, workload_entries(Kind.LEDGER_SHARD, parse_meta(body), deps.config.spire))
