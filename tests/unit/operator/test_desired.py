"""The pure builders: spec in, manifests / topics / SPIRE entries out."""

from typing import Any

from payplane.services import gateway as gateway_service
from payplane.services import payment_worker as worker_service
from payplane.services.ledger_relay import config_from_env as relay_config_from_env
from payplane.services.ledger_writer import CONSUMER_ROLE, config_from_env
from payplane.services.payment_settler import config_from_env as settler_config_from_env
from payplane_contracts.identity import WorkloadRole, local_gid, parse_workload_id
from payplane_contracts.topics import RailTopics
from payplane_operator.api.v1alpha1 import Kind, SecretKey, parse_rail, parse_shard
from payplane_operator.desired import labels as lb
from payplane_operator.desired.policy import policy_document, policy_version
from payplane_operator.desired.spire_entries import entry_id, workload_entries
from payplane_operator.desired.topics import rail_topics
from payplane_operator.desired.workloads import ChildSet, rail_children, shard_children
from payplane_operator.resources import Selector
from payplane_operator.settings import IdentityMode
from tests.operator_support import TRUST_DOMAIN, body, config, rail_spec, shard_spec

RAIL = parse_rail(body("PaymentRail", "card-eur", rail_spec(fraudPolicyRef={"name": "default"})))
SHARD_DATABASES = {"card-eur-a": SecretKey("card-eur-a-db", "dsn"), "card-eur-b": SecretKey("card-eur-b-db", "uri")}


def _rail_children(
    rail: Any, policy: dict[str, Any] | None = None, databases: dict[str, SecretKey] | None = None
) -> ChildSet:
    return rail_children(
        rail,
        ledger_databases=SHARD_DATABASES if databases is None else databases,
        policy_document=policy,
        kafka_bootstrap="kafka:9092",
        trust_domain=TRUST_DOMAIN,
    )


def _children(rail: Any = RAIL) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in _rail_children(rail).apply}


def test_a_rail_owns_gateway_and_worker_workloads_config_and_services() -> None:
    assert set(_children()) == {
        ("ConfigMap", "card-eur-config"),
        *(
            (kind, f"card-eur-{role}")
            for role in ("gateway", "payment-worker")
            for kind in ("ServiceAccount", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service")
        ),
    }


def test_every_child_has_a_controller_owner_reference_and_standard_labels() -> None:
    for manifest in _children().values():
        metadata = manifest["metadata"]
        (owner,) = metadata["ownerReferences"]
        assert owner == {
            "apiVersion": "payplane.io/v1alpha1",
            "kind": "PaymentRail",
            "name": "card-eur",
            "uid": RAIL.meta.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert metadata["namespace"] == "payments"
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "payplane-operator"
        assert labels["app.kubernetes.io/part-of"] == "payplane"
        assert labels["app.kubernetes.io/instance"] == "card-eur"
        assert labels["payplane.io/rail"] == "card-eur"


def test_an_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    children = _children()
    deployment = children[("Deployment", "card-eur-gateway")]
    assert "replicas" not in deployment["spec"]
    hpa = children[("HorizontalPodAutoscaler", "card-eur-gateway")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "card-eur-gateway"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)


def test_without_autoscaling_replicas_are_set_and_the_hpa_must_go() -> None:
    scaling = {
        "replicas": 3,
        "autoscaling": {"enabled": False, "minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercent": 70},
    }
    rail = parse_rail(body("PaymentRail", "card-eur", rail_spec(gateway={"scaling": scaling})))
    children = _rail_children(rail)
    deployment = next(
        m for m in children.apply if m["metadata"]["name"] == "card-eur-gateway" and m["kind"] == "Deployment"
    )
    assert deployment["spec"]["replicas"] == 3
    assert [(r.kind, r.name) for r in children.absent] == [("HorizontalPodAutoscaler", "card-eur-gateway")]


def test_the_worker_service_is_headless_and_the_gateway_service_exposed_as_asked() -> None:
    children = _children()
    assert children[("Service", "card-eur-payment-worker")]["spec"]["clusterIP"] == "None"
    rail = parse_rail(body("PaymentRail", "card-eur", rail_spec(gateway={"exposure": "LoadBalancer", "port": 8443})))
    gateway = _children(rail)[("Service", "card-eur-gateway")]["spec"]
    assert gateway["type"] == "LoadBalancer"
    assert gateway["ports"][0]["port"] == 8443


def test_the_selector_is_a_subset_of_the_pod_labels() -> None:
    for (kind, _), manifest in _children().items():
        if kind == "Deployment":
            selector = manifest["spec"]["selector"]["matchLabels"]
            assert selector.items() <= manifest["spec"]["template"]["metadata"]["labels"].items()


def test_service_accounts_are_the_spiffe_id_names() -> None:
    for role in (WorkloadRole.GATEWAY, WorkloadRole.PAYMENT_WORKER):
        deployment = _children()[("Deployment", lb.workload_name(role, "card-eur"))]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        spiffe = f"spiffe://{TRUST_DOMAIN}/ns/payments/sa/{account}"
        assert parse_workload_id(spiffe, TRUST_DOMAIN).role is role


def _template_hashes(
    rail: Any, policy: dict[str, Any] | None = None, databases: dict[str, SecretKey] | None = None
) -> dict[str, str]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"][lb.CONFIG_HASH_ANNOTATION]
        for m in _rail_children(rail, policy, databases).apply
        if m["kind"] == "Deployment"
    }


def test_a_config_change_rolls_the_workload_it_configures_but_a_policy_change_rolls_nothing() -> None:
    base = _template_hashes(RAIL)
    limits = _template_hashes(parse_rail(body("PaymentRail", "card-eur", rail_spec(amountLimits={"maxMinor": 5}))))
    assert limits["card-eur-payment-worker"] != base["card-eur-payment-worker"]
    body_limit = parse_rail(body("PaymentRail", "card-eur", rail_spec(gateway={"requestBodyMaxBytes": 8192})))
    assert _template_hashes(body_limit)["card-eur-gateway"] != base["card-eur-gateway"]
    a_shard_less = _template_hashes(RAIL, databases={"card-eur-a": SHARD_DATABASES["card-eur-a"]})
    assert a_shard_less["card-eur-payment-worker"] != base["card-eur-payment-worker"]
    assert a_shard_less["card-eur-gateway"] == base["card-eur-gateway"], "shards are no business of the gateway"
    assert _template_hashes(RAIL, policy_document("p", {"rules": []})) == base


def test_the_config_map_carries_only_the_policy_and_no_process_is_pointed_at_another_config() -> None:
    config_maps = [m for m in _rail_children(RAIL).apply if m["kind"] == "ConfigMap"]
    assert [m["data"] for m in config_maps] == [{}]
    with_policy = next(
        m for m in _rail_children(RAIL, policy_document("p", {"rules": []})).apply if m["kind"] == "ConfigMap"
    )
    assert set(with_policy["data"]) == {"fraud-policy.json"}
    for deployment in (m for m in _rail_children(RAIL).apply if m["kind"] == "Deployment"):
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "PAYPLANE_RAIL_CONFIG" not in names


def test_the_workers_get_every_shard_database_from_the_shards_secrets() -> None:
    worker = _children()[("Deployment", "card-eur-payment-worker")]
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["PAYPLANE_SHARD_DSN_CARD_EUR_A"]["valueFrom"] == {
        "secretKeyRef": {"name": "card-eur-a-db", "key": "dsn"}
    }
    assert by_name["PAYPLANE_SHARD_DSN_CARD_EUR_B"]["valueFrom"] == {
        "secretKeyRef": {"name": "card-eur-b-db", "key": "uri"}
    }
    composed = by_name["PAYPLANE_LEDGER_DSNS"]["value"]
    assert composed == "$(PAYPLANE_SHARD_DSN_CARD_EUR_A)\n$(PAYPLANE_SHARD_DSN_CARD_EUR_B)\n"
    names = [e["name"] for e in env]
    # Kubernetes expands $(VAR) only from variables defined earlier in the list
    assert names.index("PAYPLANE_LEDGER_DSNS") > names.index("PAYPLANE_SHARD_DSN_CARD_EUR_B")
    gateway = _children()[("Deployment", "card-eur-gateway")]
    assert not [e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"] if "DSNS" in e["name"]]
    shardless = _rail_children(RAIL, databases={}).apply
    worker_env = next(
        m for m in shardless if m["metadata"]["name"] == "card-eur-payment-worker" and m["kind"] == "Deployment"
    )
    assert "PAYPLANE_LEDGER_DSNS" not in {
        e["name"] for e in worker_env["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def _env(deployment: dict[str, Any], container: int = 0) -> dict[str, str]:
    """A container's environment as the process sees it, secrets filled with placeholders."""
    env = deployment["spec"]["template"]["spec"]["containers"][container]["env"]
    return {e["name"]: e["value"] if "value" in e else _placeholder(e["valueFrom"]) for e in env}


def _placeholder(value_from: dict[str, Any]) -> str:
    if "secretKeyRef" in value_from:
        return f"<secret {value_from['secretKeyRef']['name']}>"
    return f"<field {value_from['fieldRef']['fieldPath']}>"


def test_the_gateway_and_worker_environments_are_what_the_runtime_reads() -> None:
    redis = {"secretRef": {"name": "redis"}}
    rail = parse_rail(
        body(
            "PaymentRail",
            "card-eur",
            rail_spec(
                redis=redis,
                rateLimits={"requestsPerSecond": 50, "burst": 80},
                idempotency={"retention": "48h"},
                gateway={"requestBodyMaxBytes": 8192},
            ),
        )
    )
    children = _children(rail)
    gateway = gateway_service.config_from_env(_env(children[("Deployment", "card-eur-gateway")]))
    assert gateway.dsn == "<secret payments-db>"
    assert gateway.redis_url == "<secret redis>"
    assert gateway.worker_targets == ["dns:///card-eur-payment-worker.payments.svc:50051"]
    assert (gateway.http_port, gateway.rate_per_s, gateway.rate_burst) == (8080, 50, 80)
    assert gateway.body_bytes_max == 8192
    assert (gateway.bind_address, gateway.metrics_port) == ("<field status.podIP>", 9090)
    worker = worker_service.config_from_env(_env(children[("Deployment", "card-eur-payment-worker")]))
    assert worker.dsn == "<secret payments-db>"
    assert (worker.rail, worker.bootstrap, worker.partition_count) == ("card-eur", "kafka:9092", 8)
    assert worker.allowed_callers == [
        f"spiffe://{TRUST_DOMAIN}/ns/payments/sa/card-eur-gateway",
        f"spiffe://{TRUST_DOMAIN}/ns/payplane-system/sa/payplane-admin-cli",
    ]
    assert worker.grpc_port == 50051
    assert (worker.bind_address, worker.metrics_port) == ("<field status.podIP>", 9090)
    assert worker.retention_s == 48 * 3600
    assert (worker.amount_min_minor, worker.amount_max_minor) == (1, 1_000_000)
    assert worker.settle_in_process is False  # the pod's second container settles
    without_redis = _children()[("Deployment", "card-eur-gateway")]
    assert "PAYPLANE_REDIS_URL" not in _env(without_redis)


def test_the_shard_writer_environment_is_what_the_ledger_writer_reads() -> None:
    shard = parse_shard(body("LedgerShard", "card-eur-b", shard_spec(first=4, last=7)))
    children = shard_children(shard, RAIL, kafka_bootstrap="kafka:9092")
    deployment = next(m for m in children.apply if m["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["ledger-writer"]
    env = {e["name"]: e["value"] if "value" in e else f"<from {next(iter(e['valueFrom']))}>" for e in container["env"]}
    writer = config_from_env(env)
    assert writer.partitions == [4, 5, 6, 7]
    assert writer.partition_count == 8
    assert writer.rail == "card-eur"
    assert writer.bootstrap == "kafka:9092"
    dsn = next(e for e in container["env"] if e["name"] == "PAYPLANE_LEDGER_DSN")
    assert dsn["valueFrom"] == {"secretKeyRef": {"name": "card-eur-db", "key": "dsn"}}
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "LedgerShard"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert writer.relay_in_process is False  # the pod's second container relays the outbox
    assert writer.shard == "card-eur-b"


def test_the_shard_pods_relay_container_is_what_the_ledger_relay_reads() -> None:
    shard = parse_shard(body("LedgerShard", "card-eur-b", shard_spec(first=4, last=7)))
    deployment = next(
        m for m in shard_children(shard, RAIL, kafka_bootstrap="kafka:9092").apply if m["kind"] == "Deployment"
    )
    writer_container, relay_container = deployment["spec"]["template"]["spec"]["containers"]
    assert relay_container["args"] == ["ledger-relay"]
    env = {
        e["name"]: e["value"] if "value" in e else f"<from {next(iter(e['valueFrom']))}>"
        for e in relay_container["env"]
    }
    relay = relay_config_from_env(env)
    assert (relay.rail, relay.shard, relay.bootstrap) == ("card-eur", "card-eur-b", "kafka:9092")
    assert relay.metrics_port != int(_env_value(writer_container, "PAYPLANE_METRICS_PORT"))  # one pod, two servers
    dsn = next(e for e in relay_container["env"] if e["name"] == "PAYPLANE_LEDGER_DSN")
    assert dsn["valueFrom"] == {"secretKeyRef": {"name": "card-eur-db", "key": "dsn"}}
    assert relay_container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_worker_pods_settler_container_is_what_the_payment_settler_reads() -> None:
    worker_pod = _children()[("Deployment", "card-eur-payment-worker")]["spec"]["template"]["spec"]
    worker_container, settler_container = worker_pod["containers"]
    assert settler_container["args"] == ["payment-settler"]
    assert settler_container["ports"] == [{"name": "settle-metrics", "containerPort": 9091, "protocol": "TCP"}]
    settler = settler_config_from_env(_env(_children()[("Deployment", "card-eur-payment-worker")], container=1))
    worker = worker_service.config_from_env(_env(_children()[("Deployment", "card-eur-payment-worker")]))
    assert (settler.dsn, settler.rail, settler.bootstrap) == (worker.dsn, worker.rail, worker.bootstrap)
    assert settler.partition_count == worker.partition_count == 8
    assert (settler.bind_address, settler.metrics_port) == ("<field status.podIP>", 9091)
    assert settler.metrics_port != worker.metrics_port  # one pod, two servers
    # no SPIFFE identity and no config volume: it talks only to PostgreSQL and Kafka
    assert "SPIFFE_ENDPOINT_SOCKET" not in _env(_children()[("Deployment", "card-eur-payment-worker")], container=1)
    assert "volumeMounts" not in settler_container
    assert settler_container["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker_container["args"] == ["payment-worker"]


def _env_value(container: dict[str, Any], name: str) -> str:
    return str(next(e["value"] for e in container["env"] if e["name"] == name))


def test_topics_are_the_contract_names_with_ledger_partitions_for_commands() -> None:
    rail = parse_rail(
        body(
            "PaymentRail",
            "card-eur",
            rail_spec(ledger={"partitions": 16}, topics={"partitions": 3, "retention": "48h"}),
        )
    )
    topics = {t.name: t for t in rail_topics(rail)}
    names = RailTopics("card-eur")
    assert topics[names.ledger_commands].partitions == 16
    assert topics[names.ledger_results].partitions == 3
    assert topics[names.payment_events].partitions == 3
    assert names.dead_letters(CONSUMER_ROLE) in topics  # the writer dead-letters here
    assert topics[names.ledger_commands].configs["retention.ms"] == str(48 * 3600 * 1000)


def test_cluster_entries_select_namespace_and_service_account() -> None:
    entries = workload_entries(Kind.PAYMENT_RAIL, RAIL.meta, config().spire)
    assert [e.hint for e in entries] == ["gateway", "payment-worker"]
    gateway = entries[0]
    assert gateway.spiffe_id == f"spiffe://{TRUST_DOMAIN}/ns/payments/sa/card-eur-gateway"
    assert gateway.selectors == (Selector("k8s", "ns:payments"), Selector("k8s", "sa:card-eur-gateway"))
    assert gateway.entry_id == "payplane.payments.paymentrail.card-eur.gateway"
    assert gateway.dns_names == ("card-eur-gateway.payments.svc",)


def test_local_entries_select_the_gid_devinfra_starts_the_workload_with() -> None:
    shard = parse_shard(body("LedgerShard", "card-eur-a", shard_spec()))
    (entry,) = workload_entries(Kind.LEDGER_SHARD, shard.meta, config(IdentityMode.LOCAL).spire)
    assert entry.selectors == (Selector("unix", f"gid:{local_gid(entry.spiffe_id)}"),)
    assert entry.dns_names == ()


def test_entry_ids_use_only_characters_spire_accepts() -> None:
    shard = parse_shard(body("LedgerShard", "s" * 40, shard_spec(), namespace="n" * 63))
    identifier = entry_id(Kind.LEDGER_SHARD, shard.meta, WorkloadRole.LEDGER_WRITER)
    assert len(identifier) <= 255
    assert set(identifier) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def test_policy_versions_follow_content_not_order_of_keys() -> None:
    a = {"mode": "Enforce", "rules": [{"name": "x"}]}
    b = {"rules": [{"name": "x"}], "mode": "Enforce"}
    assert policy_version(a) == policy_version(b)
    assert policy_version(a) != policy_version({**a, "mode": "Shadow"})
    assert len(policy_version(a)) == 16


def test_a_node_selector_goes_on_every_workloads_pods_and_only_when_given() -> None:
    selector = {"kubernetes.io/hostname": "node-a"}
    rail_set = rail_children(
        RAIL,
        ledger_databases=SHARD_DATABASES,
        policy_document=None,
        kafka_bootstrap="kafka:9092",
        trust_domain=TRUST_DOMAIN,
        node_selector=selector,
    )
    shard = parse_shard(body("LedgerShard", "card-eur-a", shard_spec(first=0, last=7)))
    shard_set = shard_children(shard, RAIL, kafka_bootstrap="kafka:9092", node_selector=selector)
    deployments = [m for m in [*rail_set.apply, *shard_set.apply] if m["kind"] == "Deployment"]
    assert len(deployments) == 3
    assert all(d["spec"]["template"]["spec"]["nodeSelector"] == selector for d in deployments)
    assert all(
        "nodeSelector" not in m["spec"]["template"]["spec"]
        for m in _rail_children(RAIL).apply
        if m["kind"] == "Deployment"
    )
