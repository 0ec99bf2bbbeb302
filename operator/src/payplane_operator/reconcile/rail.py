"""Reconcile one PaymentRail: workloads, topics and identities in parallel, then coverage and policy, then
status. Level-based and idempotent: the same inputs twice change nothing the second time."""

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from payplane_contracts.identity import WorkloadRole
from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok, ok
from payplane_operator.api.v1alpha1 import API_VERSION, DeletionPolicy, Kind, PaymentRail, parse_meta, parse_rail
from payplane_operator.clients.errors import ClientError
from payplane_operator.desired import coverage as cov
from payplane_operator.desired.labels import config_map_name, workload_name
from payplane_operator.desired.policy import policy_document
from payplane_operator.desired.spire_entries import workload_entries
from payplane_operator.desired.topics import rail_topics
from payplane_operator.desired.workloads import POLICY_KEY, rail_children
from payplane_operator.errors import InvalidSpecError
from payplane_operator.reconcile import status as st
from payplane_operator.reconcile.identities import ensure_entries, remove_entries
from payplane_operator.reconcile.outcome import Note, Outcome, StepResult
from payplane_operator.reconcile.ports import Deps
from payplane_operator.reconcile.readiness import refresh_readiness
from payplane_operator.reconcile.secrets import check_secrets
from payplane_operator.reconcile.topics import delete_topics, ensure_topics
from payplane_operator.reconcile.workloads import ChildTracker, ensure_children
from payplane_operator.resources import ObjectRef


@dataclass(frozen=True)
class PolicyView:
    """A FraudPolicy as the rails see it (from the operator's index, not the API)."""

    name: str
    valid: bool
    version: str
    message: str
    raw_spec: Mapping[str, Any]


@dataclass(frozen=True)
class RailContext:
    """What a rail's reconcile needs from other objects."""

    shards: Sequence[cov.ShardRange]  # with their database Secrets: the payment workers read balances there
    policy: PolicyView | None  # the referenced FraudPolicy, when it exists
    topics_owned_by: str | None  # another namespace whose rail of the same name owns the topic names


async def _settled(result: StepResult) -> StepResult:
    """A step decided without doing anything (so it can sit in the same gather as the others)."""
    return result


def coverage_condition(partitions: int, shards: Sequence[cov.ShardRange]) -> Condition:
    result = cov.coverage(partitions, shards)
    message = cov.describe(result)
    if result.complete:
        return ok(ConditionType.PARTITIONS_COVERED, Reason.COVERED, message)
    if not shards:
        return not_ok(ConditionType.PARTITIONS_COVERED, Reason.NO_SHARDS, f"no LedgerShard names this rail: {message}")
    reason = (
        Reason.COVERAGE_GAPS if result.gaps else (Reason.COVERAGE_OVERLAPS if result.overlaps else Reason.OUTSIDE_RAIL)
    )
    return not_ok(ConditionType.PARTITIONS_COVERED, reason, message)


def policy_condition(rail: PaymentRail, policy: PolicyView | None) -> Condition:
    name = rail.spec.fraud_policy
    if name is None:
        return ok(ConditionType.POLICY_VALID, Reason.NO_POLICY, "no fraudPolicyRef: no fraud rules are evaluated")
    if policy is None:
        return not_ok(
            ConditionType.POLICY_VALID,
            Reason.POLICY_NOT_FOUND,
            f"FraudPolicy {name} does not exist in namespace {rail.meta.namespace}",
        )
    if not policy.valid:
        return not_ok(
            ConditionType.POLICY_VALID,
            Reason.POLICY_INVALID,
            f"FraudPolicy {name} is invalid ({policy.message}); the last valid version stays delivered",
        )
    return ok(ConditionType.POLICY_VALID, Reason.VALID, f"FraudPolicy {name} version {policy.version} delivered")


async def _delivered_policy(deps: Deps, rail: PaymentRail, policy: PolicyView | None) -> dict[str, Any] | None:
    """The policy document for the ConfigMap: the current one if valid, else whatever was delivered last."""
    if rail.spec.fraud_policy is None:
        return None
    if policy is not None and policy.valid:
        return policy_document(policy.name, policy.raw_spec)
    existing = await deps.kube.get(ObjectRef("v1", "ConfigMap", rail.meta.namespace, config_map_name(rail.meta.name)))
    text = ((existing or {}).get("data") or {}).get(POLICY_KEY)
    delivered: dict[str, Any] | None = json.loads(text) if text else None
    return delivered


def _invalid_status(body: Mapping[str, Any], error: InvalidSpecError) -> tuple[dict[str, Any], list[Condition]]:
    generation = int(body["metadata"].get("generation", 0))
    conditions = [not_ok(ConditionType.READY, Reason.INVALID_SPEC, str(error))]
    old = (body.get("status") or {}).get("conditions", [])
    status = {
        "observedGeneration": generation,
        "phase": st.phase_of(conditions).value,
        "conditions": st.merge_conditions(old, conditions, generation, st.now_text()),
    }
    return status, conditions


async def write_invalid(deps: Deps, body: Mapping[str, Any], error: InvalidSpecError) -> Outcome:
    """An object whose spec cannot be served: Ready=False InvalidSpec, no retry until the spec changes."""
    status, conditions = _invalid_status(body, error)
    old = (body.get("status") or {}).get("conditions", [])
    written = await st.write_status(deps.kube, body, status, deps.config.field_manager)
    return Outcome(status=status, notes=st.transition_notes(old, conditions), retry=not written, ready=False)


async def reconcile_rail(body: Mapping[str, Any], context: RailContext, deps: Deps, tracker: ChildTracker) -> Outcome:
    try:
        rail = parse_rail(body)
    except InvalidSpecError as error:
        return await write_invalid(deps, body, error)
    config = deps.config
    topics = rail_topics(rail)
    try:
        delivered = await _delivered_policy(deps, rail, context.policy)
    except (ClientError, ValueError):
        delivered = None
    ledger_databases = {shard.name: shard.database for shard in context.shards if shard.database is not None}
    children = rail_children(
        rail,
        ledger_databases=ledger_databases,
        policy_document=delivered,
        kafka_bootstrap=config.kafka.workload_bootstrap,
        trust_domain=config.spire.trust_domain,
        node_selector=config.node_selector,
    )
    if context.topics_owned_by is not None:
        message = (
            f"the topic names payplane.{rail.meta.name}.* belong to rail {rail.meta.name} in namespace "
            f"{context.topics_owned_by}; rename this rail"
        )
        topics_step = _settled(StepResult(not_ok(ConditionType.TOPICS_READY, Reason.RESOURCE_CONFLICT, message)))
    else:
        topics_step = ensure_topics(deps.kafka, topics)
    secret_refs = [
        rail.spec.payments_secret,
        *([rail.spec.redis_secret] if rail.spec.redis_secret else []),
        *ledger_databases.values(),  # the workers' pods cannot start without them
    ]
    workloads, topics_result, identities, secrets = await asyncio.gather(
        ensure_children(
            deps.kube,
            children,
            owner_uid=rail.meta.uid,
            field_manager=config.field_manager,
            readiness=config.readiness,
            tracker=tracker,
        ),
        topics_step,
        ensure_entries(deps.spire, workload_entries(Kind.PAYMENT_RAIL, rail.meta, config.spire)),
        check_secrets(deps.kube, rail.meta.namespace, secret_refs, ConditionType.SECRETS_READY),
    )
    steps: list[StepResult] = [workloads, topics_result, identities, secrets]
    dependencies = [
        workloads.condition,
        topics_result.condition,
        identities.condition,
        coverage_condition(rail.spec.ledger_partitions, context.shards),
        policy_condition(rail, context.policy),
        secrets.condition,
    ]
    conditions = [
        st.summarize_ready(dependencies, ready_message(rail)),
        *dependencies,
    ]
    gateway = workload_name(WorkloadRole.GATEWAY, rail.meta.name)
    status: dict[str, Any] = {
        "observedGeneration": rail.meta.generation,
        "phase": st.phase_of(conditions).value,
        "conditions": st.merge_conditions(
            (body.get("status") or {}).get("conditions", []), conditions, rail.meta.generation, st.now_text()
        ),
        **_pod_fields(workloads.details),
        "shards": len(context.shards),
        "endpoint": f"{gateway}.{rail.meta.namespace}.svc:{rail.spec.gateway_port}",
        "topics": topics_result.details.get("topics", []),
        "identities": identities.details.get("identities", []),
    }
    if delivered is not None:
        status["fraudPolicy"] = {"name": delivered["name"], "version": delivered["version"]}
    written = await st.write_status(deps.kube, body, status, config.field_manager)
    notes = [note for step in steps for note in step.notes]
    notes += st.transition_notes((body.get("status") or {}).get("conditions", []), conditions)
    retry = not written or any(step.retry for step in steps)
    return Outcome(status=status, notes=notes, retry=retry, ready=conditions[0].status is True)


def ready_message(rail: PaymentRail) -> str:
    return f"rail {rail.meta.name} is serving {rail.spec.currency}"


def _pod_fields(counts: Mapping[str, int]) -> dict[str, Any]:
    return {"workersReady": f"{counts.get('ready', 0)}/{counts.get('desired', 0)}"}


async def refresh_rail(body: Mapping[str, Any], deps: Deps, tracker: ChildTracker) -> Outcome | None:
    """The light pass after a status-only change of the rail's Deployments (None: do the full one)."""
    try:
        rail = parse_rail(body)
    except InvalidSpecError:
        return None
    deployments = [
        ObjectRef("apps/v1", "Deployment", rail.meta.namespace, workload_name(role, rail.meta.name))
        for role in (WorkloadRole.GATEWAY, WorkloadRole.PAYMENT_WORKER)
    ]
    return await refresh_readiness(
        body, deployments, ready_message=ready_message(rail), status_fields=_pod_fields, deps=deps, tracker=tracker
    )


async def finalize_rail(body: Mapping[str, Any], deps: Deps, *, owns_topics: bool) -> list[Note]:
    """What garbage collection cannot remove: SPIRE entries always, topics when deletionPolicy is Delete.

    Kubernetes children go with the rail through their owner references.
    """
    meta = parse_meta(body)
    notes = await remove_entries(deps.spire, workload_entries(Kind.PAYMENT_RAIL, meta, deps.config.spire))
    try:
        rail = parse_rail(body)
    except InvalidSpecError:
        return notes  # never delete data on the word of a spec that cannot be read
    if rail.spec.topic_deletion is DeletionPolicy.DELETE and owns_topics:
        notes += await delete_topics(deps.kafka, rail_topics(rail))
    return notes


def rail_ref(namespace: str, name: str) -> ObjectRef:
    return ObjectRef(API_VERSION, Kind.PAYMENT_RAIL.value, namespace, name)
