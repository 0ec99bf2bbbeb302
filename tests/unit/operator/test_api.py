"""Parsing bodies into typed specs: defaults come from the CRD, errors name the field."""

import pytest

from payplane_operator.api.v1alpha1 import (
    DeletionPolicy,
    Exposure,
    FraudAction,
    ListField,
    PolicyMode,
    parse_duration_s,
    parse_policy,
    parse_rail,
    parse_shard,
)
from payplane_operator.errors import InvalidSpecError
from tests.operator_support import body, policy_spec, rail_spec, shard_spec


def test_a_minimal_rail_gets_the_documented_defaults() -> None:
    rail = parse_rail(body("PaymentRail", "card-eur", rail_spec()))
    spec = rail.spec
    assert (spec.currency, spec.min_amount_minor, spec.max_amount_minor) == ("EUR", 1, 1_000_000)
    assert spec.idempotency_retention_s == 24 * 3600
    assert spec.gateway_exposure is Exposure.CLUSTER_IP
    assert spec.gateway_body_bytes_max == 16 * 1024
    assert spec.gateway_scaling.autoscaling.enabled
    assert spec.gateway_scaling.desired_replicas == 2
    assert spec.ledger_partitions == 8
    assert spec.topic_partitions == 6
    assert spec.topic_deletion is DeletionPolicy.RETAIN
    assert spec.fraud_policy is None
    assert rail.meta.namespace == "payments"
    assert rail.meta.generation == 1


def test_a_minimal_shard_runs_one_writer_without_autoscaling() -> None:
    shard = parse_shard(body("LedgerShard", "card-eur-a", shard_spec(first=2, last=5)))
    assert shard.spec.partition_count == 4
    assert shard.spec.database_secret_key == "dsn"
    assert shard.spec.writers.replicas == 1
    assert not shard.spec.writers.autoscaling.enabled


def test_policy_rules_keep_their_order_and_conditions() -> None:
    policy = parse_policy(body("FraudPolicy", "default", policy_spec()))
    assert policy.spec.mode is PolicyMode.ENFORCE
    assert [r.name for r in policy.spec.rules] == ["big", "blocked"]
    assert policy.spec.rules[0].when.amount_above == {"EUR": 100_000}
    assert policy.spec.rules[1].action is FraudAction.DECLINE
    assert policy.spec.rules[1].when.in_list_field is ListField.ACCOUNT_ID
    assert policy.spec.lists == {"deny": ("acct-1",)}


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("45s", 45)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "1.5h", "-1h", "24 h", "1h-1m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


def _broken_rail(mutate: object) -> dict[str, object]:
    rail = body("PaymentRail", "card-eur", rail_spec())
    mutate(rail["spec"])  # type: ignore[operator]
    return rail


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(currency="eur"), "spec.currency"),
        (lambda s: s["amountLimits"].update(minMinor=10, maxMinor=5), "spec.amountLimits.minMinor"),
        (lambda s: s["gateway"].update(port="https"), "spec.gateway.port"),
        (lambda s: s["gateway"].update(exposure="Ingress"), "spec.gateway.exposure"),
        (lambda s: s["gateway"].update(requestBodyMaxBytes=100), "spec.gateway.requestBodyMaxBytes"),
        (lambda s: s["idempotency"].update(retention="1d"), "spec.idempotency.retention"),
        (lambda s: s["idempotency"].update(retention="10m"), "spec.idempotency.retention"),
        (
            lambda s: s["paymentWorker"]["scaling"]["autoscaling"].update(minReplicas=9, maxReplicas=3),
            "spec.paymentWorker.scaling.autoscaling.minReplicas",
        ),
        (lambda s: s["topics"].update(minInSyncReplicas=3), "spec.topics.minInSyncReplicas"),
        (lambda s: s.pop("amountLimits"), "spec.amountLimits"),
        (lambda s: s["ledger"].update(partitions=True), "spec.ledger.partitions"),
    ],
)
def test_a_rail_that_admission_would_refuse_names_the_field(mutate: object, field: str) -> None:
    """Objects stored under an older schema get here; the error must say what to fix."""
    with pytest.raises(InvalidSpecError) as refused:
        parse_rail(_broken_rail(mutate))
    assert refused.value.field == field


def test_a_policy_rule_pointing_at_a_missing_list_is_invalid() -> None:
    spec = policy_spec(lists=[])
    with pytest.raises(InvalidSpecError, match=r"spec.rules\[1\].when.inList.list"):
        parse_policy(body("FraudPolicy", "p", spec))


def test_a_rule_without_conditions_is_invalid() -> None:
    spec = policy_spec(rules=[{"name": "r", "action": "Allow", "when": {}}], lists=[])
    with pytest.raises(InvalidSpecError, match=r"spec.rules\[0\].when"):
        parse_policy(body("FraudPolicy", "p", spec))


def test_a_shard_with_an_inverted_range_is_invalid() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.partitions\.first"):
        parse_shard(body("LedgerShard", "s", shard_spec(first=5, last=2)))
