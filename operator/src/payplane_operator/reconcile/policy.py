"""Reconcile one FraudPolicy: validate it, version it by content, and say so in its status.

Delivery is the rails' part: each rail that references the policy writes it into its ConfigMap (the
handlers wake those rails when the policy changes).
"""

from collections.abc import Mapping
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok, ok
from payplane_operator.api.v1alpha1 import parse_policy
from payplane_operator.desired.policy import policy_version
from payplane_operator.errors import InvalidSpecError
from payplane_operator.reconcile import status as st
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


async def reconcile_policy(body: Mapping[str, Any], deps: Deps) -> Outcome:
    view = policy_view(body)
    valid: Condition = (
        ok(ConditionType.POLICY_VALID, Reason.VALID, f"version {view.version}: {view.message}")
        if view.valid
        else not_ok(ConditionType.POLICY_VALID, Reason.POLICY_INVALID, view.message)
    )
    conditions = [st.summarize_ready([valid], f"version {view.version} ready for delivery"), valid]
    generation = int(body["metadata"].get("generation", 0))
    old_conditions = (body.get("status") or {}).get("conditions", [])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": st.phase_of(conditions).value,
        "conditions": st.merge_conditions(old_conditions, conditions, generation, st.now_text()),
        "rules": len(view.raw_spec.get("rules") or []),
    }
    if view.valid:
        status["version"] = view.version
    written = await st.write_status(deps.kube, body, status, deps.config.field_manager)
    notes = st.transition_notes(old_conditions, conditions)
    return Outcome(status=status, notes=notes, retry=not written, ready=view.valid)
