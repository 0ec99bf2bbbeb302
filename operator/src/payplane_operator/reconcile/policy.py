"""Reconcile one FraudPolicy: validate it, version it by content, read which version each payment worker
of the rails that use it runs, and say so in its status.

Delivery is the rails' part: each rail that references the policy writes it into its ConfigMap (the
handlers wake those rails when the policy changes); the workers reload the mounted file.
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from payplane_contracts.identity import WorkloadRole
from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok, ok
from payplane_operator.api.v1alpha1 import parse_policy
from payplane_operator.desired.labels import selector_labels
from payplane_operator.desired.policy import policy_version
from payplane_operator.errors import InvalidSpecError
from payplane_operator.reconcile import status as st
from payplane_operator.reconcile.observed import (
    WorkerVersion,
    observe,
    worker_version,
    workers_condition,
    workers_fields,
)
from payplane_operator.reconcile.outcome import Outcome
from payplane_operator.reconcile.ports import Deps
from payplane_operator.reconcile.rail import PolicyView


def policy_view(body: Mapping[str, Any]) -> PolicyView:
    """Pure: what the rails need to know of a policy (kept in the operator's index)."""
    raw_spec = body.get("spec") or {}
    name = body["metadata"]["name"]
    try:
        policy = parse_policy(body)
    except InvalidSpecError as error:
        return PolicyView(name=name, valid=False, version="", message=str(error), raw_spec=raw_spec)
    rules = len(policy.spec.rules)
    message = f"{rules} rule{'s' if rules != 1 else ''}, mode {policy.spec.mode.value}"
    return PolicyView(name=name, valid=True, version=policy_version(raw_spec), message=message, raw_spec=raw_spec)


async def _worker_versions(deps: Deps, namespace: str, rails: Sequence[str]) -> tuple[list[WorkerVersion], list[str]]:
    """Every started payment worker of ``rails`` with the version it reports; and the rails whose pods
    could not be listed."""
    observed = await asyncio.gather(
        *(observe(deps, namespace, selector_labels(WorkloadRole.PAYMENT_WORKER, rail)) for rail in rails)
    )
    workers = [worker_version(rail, r) for rail, reports in zip(rails, observed, strict=True) for r in reports or []]
    return workers, [rail for rail, reports in zip(rails, observed, strict=True) if reports is None]


async def reconcile_policy(body: Mapping[str, Any], deps: Deps, rails: Sequence[str] = ()) -> Outcome:
    """``rails``: the PaymentRails in the policy's namespace that reference it (from the operator's index)."""
    view = policy_view(body)
    valid: Condition = (
        ok(ConditionType.POLICY_VALID, Reason.VALID, f"version {view.version}: {view.message}")
        if view.valid
        else not_ok(ConditionType.POLICY_VALID, Reason.POLICY_INVALID, view.message)
    )
    old_status = body.get("status") or {}
    # the active version: this spec's if valid, else the last valid one (what the rails keep delivering)
    active = view.version if view.valid else old_status.get("version")
    workers, unlisted = await _worker_versions(deps, body["metadata"]["namespace"], sorted(rails))
    in_sync = workers_condition(active, workers)
    if unlisted and in_sync.status is not False:
        in_sync = Condition(
            ConditionType.WORKERS_IN_SYNC,
            None,
            Reason.WORKERS_UNREACHABLE,
            f"could not list the payment workers of rail {', '.join(unlisted)}",
        )
    dependencies = [valid, in_sync]
    conditions = [st.summarize_ready(dependencies, f"version {active} runs on every payment worker"), *dependencies]
    generation = int(body["metadata"].get("generation", 0))
    old_conditions = old_status.get("conditions", [])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": st.phase_of(conditions).value,
        "conditions": st.merge_conditions(old_conditions, conditions, generation, st.now_text()),
        "rules": len(view.raw_spec.get("rules") or []),
        "rails": sorted(rails),
        **workers_fields(active, workers),
    }
    if active:
        status["version"] = active
    written = await st.write_status(deps.kube, body, status, deps.config.field_manager)
    notes = st.transition_notes(old_conditions, conditions)
    return Outcome(status=status, notes=notes, retry=not written, ready=conditions[0].status is True)
