"""Every schema bound and CEL rule of the CRDs, against the real API server: the accepted case is accepted,
the refused case is refused with a 422 whose message names the field.

Creation is checked with server-side dry run (nothing stored). Transition rules (``oldSelf``) need a stored
object, so those create one and then try a dry-run patch. No operator runs here.
"""

import copy
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Infra
from tests.integration.operator.conftest import GROUP, NAMESPACE_GONE_S, PLURALS, VERSION, wait_for
from tests.operator_support import policy_spec, rail_spec, shard_spec

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def namespace(api: client.ApiClient, crds: None, run_id: str) -> Iterator[str]:
    name = f"crd-{run_id}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(f"namespace {name} to be deleted", gone, timeout_s=NAMESPACE_GONE_S)


def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}


BASE = {"PaymentRail": rail_spec(), "LedgerShard": shard_spec(first=0, last=3), "FraudPolicy": policy_spec()}


def _create(api: client.ApiClient, namespace: str, obj: dict[str, Any], *, dry_run: bool = True) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj, dry_run="All" if dry_run else None
    )
    return created


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 422, refused.value.body
    message: str = json.loads(refused.value.body)["message"]
    return message


@pytest.mark.parametrize("kind", list(BASE))
def test_the_base_objects_are_accepted(api: client.ApiClient, namespace: str, kind: str) -> None:
    created = _create(api, namespace, _object(kind, "ok", copy.deepcopy(BASE[kind])))
    assert created["spec"]  # defaults applied by the server
    if kind == "PaymentRail":
        assert created["spec"]["idempotency"] == {"retention": "24h"}
        assert created["spec"]["gateway"]["scaling"]["autoscaling"]["maxReplicas"] == 10
        assert created["spec"]["gateway"]["requestBodyMaxBytes"] == 16384


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return mutate


REFUSED_ON_CREATE: list[tuple[str, str, Mutation, str, str]] = [
    # kind, case, mutation, field in the message, words of the message
    ("PaymentRail", "currency-lowercase", _set("currency", "eur"), "spec.currency", "ISO 4217"),
    (
        "PaymentRail",
        "amounts-inverted",
        _set("amountLimits", {"minMinor": 10, "maxMinor": 5}),
        "spec.amountLimits.minMinor",
        "must not exceed amountLimits.maxMinor",
    ),
    (
        "PaymentRail",
        "amount-negative",
        _set("amountLimits.maxMinor", -5),
        "spec.amountLimits.maxMinor",
        "should be greater than or equal to 1",
    ),
    (
        "PaymentRail",
        "amount-huge",
        _set("amountLimits.maxMinor", 10**16),
        "spec.amountLimits.maxMinor",
        "less than or equal to 1000000000000000",
    ),
    (
        "PaymentRail",
        "body-limit-too-small",
        _set("gateway.requestBodyMaxBytes", 4095),
        "spec.gateway.requestBodyMaxBytes",
        "greater than or equal to 4096",
    ),
    (
        "PaymentRail",
        "body-limit-too-large",
        _set("gateway.requestBodyMaxBytes", 1024 * 1024 + 1),
        "spec.gateway.requestBodyMaxBytes",
        "less than or equal to 1048576",
    ),
    (
        "PaymentRail",
        "body-limit-not-a-number",
        _set("gateway.requestBodyMaxBytes", "16KiB"),
        "spec.gateway.requestBodyMaxBytes",
        "must be of type integer",
    ),
    (
        "PaymentRail",
        "burst-below-rate",
        _set("rateLimits", {"requestsPerSecond": 50, "burst": 10}),
        "spec.rateLimits.burst",
        "at least rateLimits.requestsPerSecond",
    ),
    (
        "PaymentRail",
        "retention-malformed",
        _set("idempotency.retention", "1 day"),
        "spec.idempotency.retention",
        "must be a duration",
    ),
    (
        "PaymentRail",
        "retention-too-short",
        _set("idempotency.retention", "30m"),
        "spec.idempotency.retention",
        "between 1h and 720h",
    ),
    (
        "PaymentRail",
        "topic-retention-too-long",
        _set("topics.retention", "9000h"),
        "spec.topics.retention",
        "between 1h and 8760h",
    ),
    (
        "PaymentRail",
        "replicas-min-above-max",
        _set("gateway.scaling", {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}),
        "spec.gateway.scaling.autoscaling.minReplicas",
        "must not exceed autoscaling.maxReplicas",
    ),
    (
        "PaymentRail",
        "worker-min-above-max",
        _set("paymentWorker.scaling", {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}),
        "spec.paymentWorker.scaling.autoscaling.minReplicas",
        "must not exceed autoscaling.maxReplicas",
    ),
    (
        "PaymentRail",
        "partitions-zero",
        _set("ledger.partitions", 0),
        "spec.ledger.partitions",
        "greater than or equal to 1",
    ),
    (
        "PaymentRail",
        "partitions-too-many",
        _set("ledger.partitions", 5000),
        "spec.ledger.partitions",
        "less than or equal to 4096",
    ),
    (
        "PaymentRail",
        "isr-above-replication",
        _set("topics", {"replicationFactor": 1, "minInSyncReplicas": 2}),
        "spec.topics.minInSyncReplicas",
        "must not exceed topics.replicationFactor",
    ),
    (
        "PaymentRail",
        "exposure-unknown",
        _set("gateway.exposure", "Ingress"),
        "spec.gateway.exposure",
        "Unsupported value",
    ),
    ("PaymentRail", "payments-database-missing", lambda spec: spec.pop("payments"), "spec.payments", "Required value"),
    (
        "PaymentRail",
        "redis-secret-name-invalid",
        _set("redis", {"secretRef": {"name": "Redis_URL"}}),
        "spec.redis.secretRef.name",
        "should match",
    ),
    (
        "PaymentRail",
        "deletion-policy-unknown",
        _set("topics.deletionPolicy", "Orphan"),
        "spec.topics.deletionPolicy",
        "Unsupported value",
    ),
    ("PaymentRail", "currency-too-long", _set("currency", "EURO"), "spec.currency", "Too long"),
    (
        "LedgerShard",
        "range-inverted",
        _set("partitions", {"first": 5, "last": 2}),
        "spec.partitions.first",
        "must not exceed partitions.last",
    ),
    (
        "LedgerShard",
        "range-beyond-bound",
        _set("partitions", {"first": 0, "last": 4096}),
        "spec.partitions.last",
        "less than or equal to 4095",
    ),
    (
        "LedgerShard",
        "writers-above-partitions",
        _set("writers", {"replicas": 5}),
        "spec.writers.replicas",
        "must not exceed the number of partitions the shard owns",
    ),
    (
        "LedgerShard",
        "autoscaling-above-partitions",
        _set("writers", {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 8}}),
        "spec.writers.autoscaling.maxReplicas",
        "must not exceed the number of partitions",
    ),
    ("LedgerShard", "rail-name-invalid", _set("railRef", {"name": "Card_EUR"}), "spec.railRef.name", "should match"),
    (
        "FraudPolicy",
        "rule-without-condition",
        _set("rules", [{"name": "r", "action": "Allow", "when": {}}]),
        "spec.rules[0].when",
        "at least one condition",
    ),
    (
        "FraudPolicy",
        "duplicate-rule-names",
        _set(
            "rules",
            [
                {"name": "r", "action": "Allow", "when": {"amountAbove": {"EUR": 1}}},
                {"name": "r", "action": "Review", "when": {"amountAbove": {"EUR": 2}}},
            ],
        ),
        "spec.rules[1]",
        "Duplicate value",
    ),
    (
        "FraudPolicy",
        "threshold-currency-lowercase",
        _set("rules", [{"name": "r", "action": "Review", "when": {"amountAbove": {"eur": 1}}}]),
        "spec.rules[0].when.amountAbove",
        "ISO 4217",
    ),
    (
        "FraudPolicy",
        "velocity-window-malformed",
        _set("rules", [{"name": "r", "action": "Review", "when": {"velocity": {"window": "10x", "maxCount": 3}}}]),
        "spec.rules[0].when.velocity.window",
        "must be a duration",
    ),
    ("FraudPolicy", "list-missing", _set("lists", []), "spec.rules", "must name an entry of lists"),
    ("FraudPolicy", "mode-unknown", _set("mode", "Audit"), "spec.mode", "Unsupported value"),
]


@pytest.mark.parametrize(
    ("kind", "case", "mutate", "field", "words"), REFUSED_ON_CREATE, ids=[case for _, case, *_ in REFUSED_ON_CREATE]
)
def test_refused_at_admission_naming_the_field(
    api: client.ApiClient, namespace: str, kind: str, case: str, mutate: Mutation, field: str, words: str
) -> None:
    spec = copy.deepcopy(BASE[kind])
    mutate(spec)
    message = _refusal(lambda: _create(api, namespace, _object(kind, case, spec)))
    assert field in message, message
    assert words in message, message


@pytest.mark.parametrize("name", ["Card-EUR", "card.eur", "1card", "c" * 41])
def test_names_that_cannot_name_services_and_topics_are_refused(
    api: client.ApiClient, namespace: str, name: str
) -> None:
    message = _refusal(lambda: _create(api, namespace, _object("PaymentRail", name, rail_spec())))
    assert "metadata.name" in message


def _patch(api: client.ApiClient, namespace: str, kind: str, name: str, patch: dict[str, Any]) -> object:
    return client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name, patch, dry_run="All"
    )


TRANSITIONS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("PaymentRail", "currency-changed", {"spec": {"currency": "USD"}}, "spec.currency", "currency is immutable"),
    (
        "PaymentRail",
        "partitions-shrunk",
        {"spec": {"ledger": {"partitions": 4}}},
        "spec.ledger.partitions",
        "may only grow",
    ),
    (
        "PaymentRail",
        "topic-partitions-shrunk",
        {"spec": {"topics": {"partitions": 1}}},
        "spec.topics.partitions",
        "may only grow",
    ),
    (
        "PaymentRail",
        "replication-changed",
        {"spec": {"topics": {"replicationFactor": 3}}},
        "spec.topics.replicationFactor",
        "immutable",
    ),
    ("LedgerShard", "rail-changed", {"spec": {"railRef": {"name": "other"}}}, "spec.railRef", "immutable"),
    ("LedgerShard", "range-narrowed", {"spec": {"partitions": {"first": 1}}}, "spec.partitions", "may only widen"),
    (
        "LedgerShard",
        "database-changed",
        {"spec": {"database": {"secretRef": {"name": "other-db"}}}},
        "spec.database.secretRef",
        "immutable",
    ),
]


@pytest.fixture(scope="module")
def stored(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """One stored object per kind, for the transition rules."""
    names = {"PaymentRail": "stored-rail", "LedgerShard": "stored-shard", "FraudPolicy": "stored-policy"}
    for kind, name in names.items():
        spec = copy.deepcopy(BASE[kind])
        if kind == "PaymentRail":
            spec["topics"] = {"partitions": 4}
        _create(api, namespace, _object(kind, name, spec), dry_run=False)
    return names


@pytest.mark.parametrize(
    ("kind", "case", "patch", "field", "words"), TRANSITIONS, ids=[case for _, case, *_ in TRANSITIONS]
)
def test_transition_rules_refuse_changes_naming_the_field(
    api: client.ApiClient,
    namespace: str,
    stored: dict[str, str],
    kind: str,
    case: str,
    patch: dict[str, Any],
    field: str,
    words: str,
) -> None:
    message = _refusal(lambda: _patch(api, namespace, kind, stored[kind], patch))
    assert field in message, message
    assert words in message, message


@pytest.mark.parametrize(
    ("kind", "patch"),
    [
        ("PaymentRail", {"spec": {"ledger": {"partitions": 16}, "topics": {"partitions": 8}}}),
        ("PaymentRail", {"spec": {"amountLimits": {"maxMinor": 7}, "gateway": {"exposure": "LoadBalancer"}}}),
        ("PaymentRail", {"spec": {"gateway": {"requestBodyMaxBytes": 1024 * 1024}}}),
        ("LedgerShard", {"spec": {"partitions": {"last": 9}, "writers": {"replicas": 4}}}),
        ("FraudPolicy", {"spec": {"mode": "Shadow"}}),
    ],
)
def test_allowed_changes_pass(
    api: client.ApiClient, namespace: str, stored: dict[str, str], kind: str, patch: dict[str, Any]
) -> None:
    _patch(api, namespace, kind, stored[kind], patch)


def test_the_scale_subresource_scales_writers_within_the_rules(
    api: client.ApiClient, namespace: str, stored: dict[str, str]
) -> None:
    custom = client.CustomObjectsApi(api)
    scaled = custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, "ledgershards", stored["LedgerShard"], {"spec": {"replicas": 3}}
    )
    assert scaled["spec"]["replicas"] == 3
    message = _refusal(
        lambda: custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, "ledgershards", stored["LedgerShard"], {"spec": {"replicas": 9}}
        )
    )
    assert "writers.replicas" in message


def test_kubectl_explain_reads_well(api: client.ApiClient, namespace: str, infra: Infra) -> None:
    result = subprocess.run(
        [infra["PAYPLANE_KUBECTL"], "explain", "paymentrail.spec.ledger"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "KUBECONFIG": infra["KUBECONFIG"]},
    )
    text = " ".join(result.stdout.split())
    assert "How the rail's ledger is partitioned" in text
    assert "May only grow. Defaults to 8." in text
    listing = subprocess.run(
        [infra["PAYPLANE_KUBECTL"], "api-resources", "--categories=payplane", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "KUBECONFIG": infra["KUBECONFIG"]},
    )
    assert set(listing.stdout.split()) == {
        "paymentrails.payplane.io",
        "ledgershards.payplane.io",
        "fraudpolicies.payplane.io",
    }
