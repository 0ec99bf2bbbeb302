"""The operator end to end against the real API server + controller-manager, Kafka and SPIRE server.

One rail with two shards and a fraud policy goes through its life in order: created → Ready; spec changed
(more partitions, a wider shard, more writers) → applied, with the coverage gap named on the way; drift
(a Deployment, a SPIRE entry, a topic config, a hand scale) → restored; the same manifests re-applied →
nothing changes; deleted → everything outside Kubernetes that it made is gone, topics kept by default.
"""

import json
import time
import urllib.request
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kubernetes import client

from payplane_contracts.topics import RailTopics
from tests.integration.operator.conftest import DRIFT_S, Cluster, Operator, wait_for

pytestmark = pytest.mark.timeout(600)
SCALING = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}}


@pytest.fixture(scope="module")
def names(run_id: str, cluster: Cluster) -> dict[str, str]:
    rail = f"card-{run_id}"
    cluster.rails_seen.add(rail)  # its topics are retained by the rail; the operator fixture removes them
    return {"rail": rail, "a": f"{rail}-a", "b": f"{rail}-b", "policy": f"fraud-{run_id}"}


def _rail(names: dict[str, str], partitions: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "PaymentRail",
        "metadata": {"name": names["rail"]},
        "spec": {
            "currency": "EUR",
            "amountLimits": {"minMinor": 50, "maxMinor": 5_000_000},
            "payments": {"database": {"secretRef": {"name": "payments-db"}}},
            "ledger": {"partitions": partitions},
            "topics": {"partitions": 2},
            # minReplicas 1 = the Deployment's default: the HPA has nothing to change, so the
            # no-change test below sees only what the operator does
            "gateway": {"scaling": SCALING},
            "paymentWorker": {"scaling": SCALING},
            "fraudPolicyRef": {"name": names["policy"]},
        },
    }


def _shard(name: str, rail: str, first: int, last: int, writers: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "LedgerShard",
        "metadata": {"name": name},
        "spec": {
            "railRef": {"name": rail},
            "partitions": {"first": first, "last": last},
            "database": {"secretRef": {"name": f"{name}-db"}},
            "writers": {"replicas": writers},
        },
    }


def _policy(names: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "FraudPolicy",
        "metadata": {"name": names["policy"]},
        "spec": {"rules": [{"name": "large", "action": "Review", "when": {"amountAbove": {"EUR": 500_000}}}]},
    }


def _manifests(names: dict[str, str]) -> list[dict[str, Any]]:
    return [
        _policy(names),
        _rail(names),
        _shard(names["a"], names["rail"], 0, 3),
        _shard(names["b"], names["rail"], 4, 7),
    ]


def _secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _owned_by(obj: Any, kind: str, name: str) -> bool:
    refs = obj.metadata.owner_references or []
    return any(r.kind == kind and r.name == name and r.controller for r in refs)


def test_a_rail_with_two_shards_becomes_ready(cluster: Cluster, operator: Operator, names: dict[str, str]) -> None:
    # shard b's database Secret comes later: the shard says what it waits for, and so does the rail (its
    # payment workers read every shard's database, so their pods cannot start without that Secret)
    cluster.apply(_secret("payments-db", dsn="postgresql://p@db/payments"), _secret(f"{names['a']}-db", dsn="x"))
    cluster.apply(*_manifests(names))
    cluster.wait_condition("LedgerShard", names["a"], "Ready", generation=1)
    waiting = cluster.wait_condition("LedgerShard", names["b"], "DatabaseSecretReady", "False", reason="SecretNotFound")
    assert waiting["message"] == f"Secret {names['b']}-db does not exist in namespace {cluster.namespace}"
    assert cluster.condition("LedgerShard", names["b"], "Ready")["reason"] == "SecretNotFound"  # type: ignore[index]
    rail_waiting = cluster.wait_condition(
        "PaymentRail", names["rail"], "SecretsReady", "False", reason="SecretNotFound"
    )
    assert rail_waiting["message"] == waiting["message"]
    started = time.monotonic()
    cluster.apply(_secret(f"{names['b']}-db", dsn="postgresql://l@db/ledger_b"))
    ready = cluster.wait_condition("PaymentRail", names["rail"], "Ready", generation=1)
    print(f"time to Ready after the last Secret: {time.monotonic() - started:.2f} s")
    rail = cluster.get("PaymentRail", names["rail"])
    assert rail is not None
    status = rail["status"]
    assert status["observedGeneration"] == rail["metadata"]["generation"] == 1
    assert status["phase"] == "Ready"
    assert ready["reason"] == "Ready"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == dict.fromkeys(
        (
            "Ready",
            "WorkloadsReady",
            "TopicsReady",
            "IdentitiesReady",
            "PartitionsCovered",
            "PolicyValid",
            "SecretsReady",
        ),
        "True",
    )
    assert status["shards"] == 2
    assert status["endpoint"] == f"{names['rail']}-gateway.{cluster.namespace}.svc:80"
    policy = cluster.get("FraudPolicy", names["policy"])
    assert policy is not None
    assert status["fraudPolicy"] == {"name": names["policy"], "version": policy["status"]["version"]}

    topics = RailTopics(names["rail"])
    partitions = cluster.topics([topics.ledger_commands, topics.ledger_results, topics.payment_events])
    assert partitions == {topics.ledger_commands: 8, topics.ledger_results: 2, topics.payment_events: 2}

    entries = cluster.entries()
    trust = cluster.infra["PAYPLANE_SPIRE_TRUST_DOMAIN"]
    expected = {
        f"spiffe://{trust}/ns/{cluster.namespace}/sa/{names['rail']}-gateway",
        f"spiffe://{trust}/ns/{cluster.namespace}/sa/{names['rail']}-payment-worker",
        f"spiffe://{trust}/ns/{cluster.namespace}/sa/{names['a']}-ledger-writer",
        f"spiffe://{trust}/ns/{cluster.namespace}/sa/{names['b']}-ledger-writer",
    }
    assert {e.spiffe_id for e in entries.values()} == expected
    for entry in entries.values():
        assert entry.parent_id == cluster.infra["PAYPLANE_SPIRE_NODE_ID"]
        (selector,) = entry.selectors
        assert selector.startswith("unix:gid:")

    cluster.wait_condition("LedgerShard", names["b"], "Ready", generation=1)
    ns = cluster.namespace
    for role in ("gateway", "payment-worker"):
        name = f"{names['rail']}-{role}"
        for read in (
            cluster.apps.read_namespaced_deployment,
            cluster.core.read_namespaced_service,
            cluster.core.read_namespaced_service_account,
        ):
            assert _owned_by(read(name, ns), "PaymentRail", names["rail"])

        assert _owned_by(
            client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(name, ns),
            "PaymentRail",
            names["rail"],
        )
        assert _owned_by(
            client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(name, ns),
            "PaymentRail",
            names["rail"],
        )
    assert _owned_by(
        cluster.core.read_namespaced_config_map(f"{names['rail']}-config", ns), "PaymentRail", names["rail"]
    )
    worker = cluster.apps.read_namespaced_deployment(f"{names['rail']}-payment-worker", ns)
    worker_env = {e.name: e for e in worker.spec.template.spec.containers[0].env}
    assert {
        name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for name, e in worker_env.items()
        if name.startswith("PAYPLANE_SHARD_DSN_")
    } == {f"PAYPLANE_SHARD_DSN_{names[s].upper().replace('-', '_')}": (f"{names[s]}-db", "dsn") for s in ("a", "b")}
    assert worker_env["PAYPLANE_LEDGER_DSNS"].value.count("$(PAYPLANE_SHARD_DSN_") == 2
    writer = cluster.deployment(f"{names['a']}-ledger-writer")
    assert writer is not None
    assert _owned_by(writer, "LedgerShard", names["a"])

    events = cluster.core.list_namespaced_event(
        cluster.namespace, field_selector=f"involvedObject.kind=PaymentRail,involvedObject.name={names['rail']}"
    ).items
    reasons = {e.reason for e in events}
    assert {"TopicCreated", "IdentityRegistered", "Ready"} <= reasons, reasons
    assert all(e.source.component == "payplane-operator" for e in events)

    listing = cluster.kubectl("get", "payplane").stdout
    assert names["rail"] in listing
    assert "EUR" in listing
    assert "Ready" in listing
    with urllib.request.urlopen(operator.liveness_url, timeout=5) as response:
        assert response.status == 200
        assert "reconciling" in json.loads(response.read())


def test_a_coverage_gap_is_named_then_a_spec_change_is_applied(
    cluster: Cluster, operator: Operator, names: dict[str, str]
) -> None:
    cluster.apply(_rail(names, partitions=12))
    gap = cluster.wait_condition(
        "PaymentRail", names["rail"], "PartitionsCovered", "False", reason="PartitionGaps", generation=2
    )
    assert gap["message"] == "partitions 8-11 have no shard"
    ready = cluster.condition("PaymentRail", names["rail"], "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "partitions 8-11 have no shard" in ready["message"]
    topics = RailTopics(names["rail"])
    wait_for(
        "the commands topic to grow to 12 partitions",
        lambda: cluster.topics([topics.ledger_commands]).get(topics.ledger_commands) == 12,
    )

    cluster.apply(_shard(names["b"], names["rail"], 4, 11), _shard(names["a"], names["rail"], 0, 3, writers=2))
    cluster.wait_condition("PaymentRail", names["rail"], "Ready", generation=2)

    def writer_env() -> dict[str, str] | None:
        deployment = cluster.deployment(f"{names['b']}-ledger-writer")
        if deployment is None:
            return None
        env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
        return env if env.get("PAYPLANE_LEDGER_PARTITIONS") == "4-11" else None

    env = wait_for("shard b's writers to own partitions 4-11 of 12", writer_env)
    assert env["PAYPLANE_LEDGER_PARTITION_COUNT"] == "12"
    wait_for(
        "shard a to run 2 writers",
        lambda: (d := cluster.deployment(f"{names['a']}-ledger-writer")) is not None and d.spec.replicas == 2,
    )
    shard_a = cluster.wait_condition("LedgerShard", names["a"], "Ready", generation=2)
    assert shard_a["observedGeneration"] == 2


def test_drift_is_restored(cluster: Cluster, operator: Operator, names: dict[str, str]) -> None:
    gateway = f"{names['rail']}-gateway"
    before = cluster.deployment(gateway)
    assert before is not None
    cluster.apps.delete_namespaced_deployment(gateway, cluster.namespace)
    restored = wait_for(
        "the deleted gateway Deployment to be re-created",
        lambda: (d := cluster.deployment(gateway)) is not None and d.metadata.uid != before.metadata.uid,
    )
    assert restored

    entry_id = f"payplane.{cluster.namespace}.ledgershard.{names['a']}.ledger-writer"
    cluster.spire().delete_entry(entry_id)
    wait_for(
        "the deleted SPIRE entry to be re-registered",
        lambda: entry_id in cluster.entries(),
        timeout_s=10 * DRIFT_S + 10,
    )

    writer = f"{names['a']}-ledger-writer"
    cluster.kubectl("scale", "deployment", writer, "--replicas=5")
    wait_for(
        "the hand-scaled writer Deployment to be set back to 2",
        lambda: (d := cluster.deployment(writer)) is not None and d.spec.replicas == 2,
        timeout_s=10 * DRIFT_S + 10,
    )

    topic = RailTopics(names["rail"]).payment_events
    resource = ConfigResource(
        ConfigResourceType.TOPIC,
        topic,
        {"retention.ms": "60000", "cleanup.policy": "delete", "min.insync.replicas": "1"},
    )
    cluster.kafka(lambda admin: admin.alter_configs([resource]))

    def retention() -> str:
        described = cluster.kafka(
            lambda admin: admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
            )
        )
        entries = described[0].to_object()["resources"][0]["config_entries"]
        return str(entries[0]["config_value"])

    wait_for(
        "the topic's retention to be restored to 168h",
        lambda: retention() == str(168 * 3600 * 1000),
        timeout_s=10 * DRIFT_S + 10,
    )


def test_applying_the_same_manifests_again_changes_nothing(
    cluster: Cluster, operator: Operator, names: dict[str, str]
) -> None:
    manifests = [
        _policy(names),
        _rail(names, partitions=12),
        _shard(names["a"], names["rail"], 0, 3, writers=2),
        _shard(names["b"], names["rail"], 4, 11),
    ]
    cluster.apply(*manifests)
    cluster.wait_condition("PaymentRail", names["rail"], "Ready", generation=2)
    time.sleep(2 * DRIFT_S)  # let any wake-up from the steps above settle

    def versions() -> dict[str, str]:
        found = {}
        for kind, name in (
            ("PaymentRail", names["rail"]),
            ("LedgerShard", names["a"]),
            ("LedgerShard", names["b"]),
            ("FraudPolicy", names["policy"]),
        ):
            obj = cluster.get(kind, name)
            assert obj is not None
            found[f"{kind}/{name}"] = obj["metadata"]["resourceVersion"]
        for deployment in cluster.apps.list_namespaced_deployment(cluster.namespace).items:
            found[f"Deployment/{deployment.metadata.name}"] = deployment.metadata.resource_version
        for service in cluster.core.list_namespaced_service(cluster.namespace).items:
            found[f"Service/{service.metadata.name}"] = service.metadata.resource_version
        for config_map in cluster.core.list_namespaced_config_map(cluster.namespace).items:
            found[f"ConfigMap/{config_map.metadata.name}"] = config_map.metadata.resource_version
        return found

    before = versions()
    output = cluster.apply(*manifests)
    assert output.count("unchanged") == len(manifests), output
    time.sleep(3 * DRIFT_S)  # several drift passes of every object
    assert versions() == before


def test_deleting_the_rail_removes_what_it_made_and_keeps_its_topics(
    cluster: Cluster, operator: Operator, names: dict[str, str]
) -> None:
    cluster.kubectl("delete", "paymentrail", names["rail"], "--wait=false")
    wait_for("the rail to be finalized and gone", lambda: cluster.get("PaymentRail", names["rail"]) is None)
    wait_for(
        "the rail's Deployments to be garbage-collected",
        lambda: (
            cluster.deployment(f"{names['rail']}-gateway") is None
            and cluster.deployment(f"{names['rail']}-payment-worker") is None
        ),
    )
    wait_for(
        "the rail's SPIRE entries to be deleted", lambda: not [e for e in cluster.entries() if ".paymentrail." in e]
    )
    shard = cluster.wait_condition("LedgerShard", names["a"], "PartitionsValid", "False", reason="RailNotFound")
    assert names["rail"] in shard["message"]
    topics = RailTopics(names["rail"])
    assert cluster.topics([topics.ledger_commands]) == {topics.ledger_commands: 12}  # deletionPolicy: Retain
    cluster.kubectl("delete", "ledgershards", "--all", "--wait=false")
    wait_for("the shards' SPIRE entries to be deleted", lambda: not cluster.entries())


def test_a_rail_with_deletion_policy_delete_takes_its_topics_along(
    cluster: Cluster, operator: Operator, run_id: str
) -> None:
    name = f"temp-{run_id}"
    rail = {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "PaymentRail",
        "metadata": {"name": name},
        "spec": {
            "currency": "USD",
            "amountLimits": {"maxMinor": 100},
            "payments": {"database": {"secretRef": {"name": "payments-db"}}},
            "ledger": {"partitions": 1},
            "topics": {"partitions": 1, "deletionPolicy": "Delete"},
        },
    }
    cluster.apply(rail)
    cluster.wait_condition("PaymentRail", name, "TopicsReady")
    no_shards = cluster.wait_condition("PaymentRail", name, "PartitionsCovered", "False", reason="NoShards")
    assert "partition 0 has no shard" in no_shards["message"]
    topics = RailTopics(name)
    assert cluster.topics([topics.ledger_commands]) == {topics.ledger_commands: 1}
    cluster.kubectl("delete", "paymentrail", name)
    wait_for(
        "the rail's topics to be deleted with it",
        lambda: not cluster.topics([topics.ledger_commands, topics.ledger_results, topics.payment_events]),
    )


def test_a_same_named_object_is_not_overwritten_and_an_orphan_is_adopted(
    cluster: Cluster, operator: Operator, run_id: str
) -> None:
    name = f"own-{run_id}"
    cluster.rails_seen.add(name)
    ns = cluster.namespace
    foreign = cluster.core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=f"{name}-gateway", labels={"team": "web"}),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8443)], selector={"app": "web"}),
        ),
    )
    orphan_labels = {"app.kubernetes.io/managed-by": "payplane-operator", "app.kubernetes.io/instance": name}
    cluster.core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"{name}-config", labels=orphan_labels))
    )
    rail = {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "PaymentRail",
        "metadata": {"name": name},
        "spec": {
            "currency": "USD",
            "amountLimits": {"maxMinor": 100},
            "payments": {"database": {"secretRef": {"name": "payments-db"}}},
            "ledger": {"partitions": 1},
            "topics": {"partitions": 1, "deletionPolicy": "Delete"},
        },
    }
    cluster.apply(rail)
    conflict = cluster.wait_condition("PaymentRail", name, "WorkloadsReady", "False", reason="ResourceConflict")
    assert f"Service {name}-gateway already exists and was not made for PaymentRail {name}" in conflict["message"]
    time.sleep(2 * DRIFT_S)  # drift passes must leave it alone too
    untouched = cluster.core.read_namespaced_service(f"{name}-gateway", ns)
    assert untouched.metadata.resource_version == foreign.metadata.resource_version
    assert untouched.spec.ports[0].port == 8443
    assert not untouched.metadata.owner_references
    uid = (cluster.get("PaymentRail", name) or {})["metadata"]["uid"]
    adopted = cluster.core.read_namespaced_config_map(f"{name}-config", ns)
    assert [r.uid for r in adopted.metadata.owner_references or []] == [uid]

    cluster.core.delete_namespaced_service(f"{name}-gateway", ns)
    cluster.wait_condition("PaymentRail", name, "WorkloadsReady")
    taken = cluster.core.read_namespaced_service(f"{name}-gateway", ns)
    assert _owned_by(taken, "PaymentRail", name)
    cluster.kubectl("delete", f"paymentrail/{name}", "--wait=true")
