"""The process kubelet's pure part: a pod → the processes that run it (env, paths, command, identity)."""

from pathlib import Path
from typing import Any

import pytest

from payplane.devinfra.kubelet.podspec import (
    NodeSettings,
    PodConfigError,
    PodObjects,
    container_argv,
    cpu_request_milli,
    expand,
    mount_table,
    niceness_for_cpu_request,
    pod_gid,
    point_grpc_dns,
    process_specs,
    resolve_env,
    rewrite_paths,
    volume_plans,
)
from payplane.services import gateway as gateway_service
from payplane.services import ledger_relay as relay_service
from payplane.services import ledger_writer as writer_service
from payplane.services import payment_settler as settler_service
from payplane.services import payment_worker as worker_service
from payplane_contracts.identity import WorkloadRole, local_gid, workload_spiffe_id
from payplane_operator.api.v1alpha1 import SecretKey, parse_rail, parse_shard
from payplane_operator.desired.workloads import rail_children, shard_children
from tests.operator_support import TRUST_DOMAIN, body, rail_spec, shard_spec

POD_IP = "198.18.0.7"
NODE = NodeSettings(
    node_name="node-a",
    host_ip="127.0.0.1",
    trust_domain=TRUST_DOMAIN,
    spiffe_dir=Path("/state/kubelet/spiffe"),
    dns_authority="127.0.0.1:5353",
    entrypoint=("/venv/bin/payplane",),
    executables={"payplane": "/venv/bin/payplane", "python": "/venv/bin/python"},
    base_env={"PATH": "/venv/bin:/usr/bin"},
)


def pod(containers: list[dict[str, Any]], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "nodeName": "node-a", "containers": containers, "volumes": volumes or []},
    }


def test_expansion_substitutes_defined_variables_and_keeps_the_rest() -> None:
    env = {"HOST": "db", "PORT": "5432"}
    assert expand("postgres://$(HOST):$(PORT)/x", env) == "postgres://db:5432/x"
    assert expand("$(MISSING) and $$(HOST)", env) == "$(MISSING) and $(HOST)"


def test_env_comes_from_values_config_maps_secrets_fields_and_env_from() -> None:
    container = {
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-2"},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
    }
    objects = PodObjects(config_maps={"settings": {"mode": "fast"}}, secrets={"db": {"dsn": "postgresql://x"}})
    env = resolve_env(pod([container]), container, objects, pod_ip=POD_IP, host_ip="127.0.0.1")
    assert env == {
        "CFG_mode": "fast",
        "A": "1",
        "B": "1-2",
        "MODE": "fast",
        "DSN": "postgresql://x",
        "POD": "web-1",
        "IP": POD_IP,
        "APP": "web",
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"secretKeyRef": {"name": "db", "key": "dsn"}}, 'secret "db" not found'),
        ({"configMapKeyRef": {"name": "settings", "key": "nope"}}, 'couldn\'t find key nope in configMap "settings"'),
        ({"resourceFieldRef": {"resource": "limits.cpu"}}, "only value, configMapKeyRef"),
    ],
)
def test_an_unresolvable_reference_is_a_config_error_naming_it(ref: dict[str, Any], message: str) -> None:
    container = {"name": "app", "env": [{"name": "X", "valueFrom": ref}]}
    objects = PodObjects(config_maps={"settings": {"mode": "fast"}})
    with pytest.raises(PodConfigError, match=message):
        resolve_env(pod([container]), container, objects, pod_ip=POD_IP, host_ip="127.0.0.1")


def test_paths_under_a_mount_are_rewritten_to_the_pods_directory() -> None:
    mounts = [("/etc/payplane", "/pods/p/volumes/config"), ("/spiffe", "/state/spiffe")]
    assert rewrite_paths("/etc/payplane/rail.json", mounts) == "/pods/p/volumes/config/rail.json"
    assert rewrite_paths("/etc/payplane", mounts) == "/pods/p/volumes/config"
    assert rewrite_paths("unix:///spiffe/agent.sock", mounts) == "unix:///state/spiffe/agent.sock"
    assert rewrite_paths("/etc/payplaneX/a", mounts) == "/etc/payplaneX/a"
    assert rewrite_paths("dns:///svc:1", mounts) == "dns:///svc:1"


def test_grpc_dns_targets_point_at_the_kubelet_resolver() -> None:
    assert point_grpc_dns("dns:///w.ns.svc:50051,dns:///v.ns.svc:1", "127.0.0.1:53") == (
        "dns://127.0.0.1:53/w.ns.svc:50051,dns://127.0.0.1:53/v.ns.svc:1"
    )
    assert point_grpc_dns("localhost:5", "127.0.0.1:53") == "localhost:5"


def test_the_command_is_the_entrypoint_with_args_unless_the_container_names_one() -> None:
    assert container_argv({"name": "a", "args": ["gateway"]}, NODE, {}) == ("/venv/bin/payplane", "gateway")
    named = {"name": "a", "command": ["python", "-m", "x"], "args": ["--n=$(N)"]}
    assert container_argv(named, NODE, {"N": "3"}) == ("/venv/bin/python", "-m", "x", "--n=3")


def test_volumes_are_files_a_host_path_or_the_spiffe_socket_directory() -> None:
    volumes = [
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "picked", "configMap": {"name": "settings", "items": [{"key": "mode", "path": "m.txt"}]}},
        {"name": "creds", "secret": {"secretName": "db"}},
        {"name": "spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}},
        {"name": "scratch", "emptyDir": {}},
    ]
    objects = PodObjects(config_maps={"settings": {"mode": "fast", "n": "1"}}, secrets={"db": {"dsn": "x"}})
    plans = {p.name: p for p in volume_plans(pod([], volumes), objects, NODE.spiffe_dir)}
    assert plans["config"].files == {"mode": b"fast", "n": b"1"}
    assert plans["picked"].files == {"m.txt": b"fast"}
    assert plans["creds"].files == {"dsn": b"x"}
    assert plans["spiffe"].host_path == str(NODE.spiffe_dir)
    assert plans["scratch"].files == {}
    with pytest.raises(PodConfigError, match='configMap "settings" not found'):
        volume_plans(pod([], volumes), PodObjects(), NODE.spiffe_dir)
    table = mount_table(
        {"volumeMounts": [{"name": "config", "mountPath": "/etc/x/"}]}, list(plans.values()), Path("/p")
    )
    assert table == [("/etc/x", "/p/volumes/config")]


def test_the_gid_is_the_one_the_operators_local_spire_entries_select() -> None:
    the_pod = {"metadata": {"namespace": "payments"}, "spec": {"serviceAccountName": "card-eur-gateway"}}
    expected = local_gid(str(workload_spiffe_id(TRUST_DOMAIN, WorkloadRole.GATEWAY, "payments", "card-eur")))
    assert pod_gid(the_pod, TRUST_DOMAIN) == expected


def _pod_of(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"], "uid": f"uid-{name}"},
        "spec": deployment["spec"]["template"]["spec"],
    }


def test_the_operators_pods_become_processes_the_services_accept() -> None:
    """The operator's real pod templates, through the kubelet, into each service's own config parser."""
    rail = parse_rail(body("PaymentRail", "card-eur", rail_spec(redis={"secretRef": {"name": "card-eur-redis"}})))
    children = rail_children(
        rail,
        ledger_databases={
            "card-eur-a": SecretKey("card-eur-db", "dsn"),
            "card-eur-b": SecretKey("card-eur-b-db", "dsn"),
        },
        policy_document=None,
        kafka_bootstrap="127.0.0.1:9092",
        trust_domain=TRUST_DOMAIN,
    )
    shard = parse_shard(body("LedgerShard", "card-eur-a", shard_spec(first=0, last=7)))
    shard_set = shard_children(shard, rail, kafka_bootstrap="127.0.0.1:9092")
    deployments = {m["metadata"]["name"]: m for m in [*children.apply, *shard_set.apply] if m["kind"] == "Deployment"}
    config_map = next(m for m in children.apply if m["kind"] == "ConfigMap")
    objects = PodObjects(
        config_maps={config_map["metadata"]["name"]: config_map["data"]},
        secrets={
            "payments-db": {"dsn": "postgresql://p"},
            "card-eur-redis": {"url": "redis://r"},
            "card-eur-db": {"dsn": "postgresql://l"},
            "card-eur-b-db": {"dsn": "postgresql://h1:5432,h2:5432/b\n"},  # multi-host, written from a file
        },
    )
    pod_dir = Path("/pods/gw")

    def specs_of(name: str) -> list[Any]:
        return process_specs(_pod_of(deployments[name], f"{name}-1"), objects, NODE, pod_ip=POD_IP, pod_dir=pod_dir)

    def spec_of(name: str) -> Any:
        (spec,) = specs_of(name)
        return spec

    gateway_spec = spec_of("card-eur-gateway")
    assert gateway_spec.argv == ("/venv/bin/payplane", "gateway")
    assert gateway_spec.env["SPIFFE_ENDPOINT_SOCKET"] == f"unix://{NODE.spiffe_dir}/spire-agent.sock"
    assert gateway_spec.readiness_probe is not None
    assert gateway_spec.ports["http"] == 8080
    gateway = gateway_service.config_from_env(dict(gateway_spec.env))
    assert gateway.worker_targets == ["dns://127.0.0.1:5353/card-eur-payment-worker.payments.svc:50051"]
    assert (gateway.bind_address, gateway.http_port, gateway.metrics_port) == (POD_IP, 8080, 9090)
    assert (gateway.dsn, gateway.redis_url) == ("postgresql://p", "redis://r")
    worker_spec, settler_spec = specs_of("card-eur-payment-worker")
    worker = worker_service.config_from_env(dict(worker_spec.env))
    assert (worker.bind_address, worker.grpc_port, worker.rail) == (POD_IP, 50051, "card-eur")
    assert worker.settle_in_process is False
    settler = settler_service.config_from_env(dict(settler_spec.env))  # the pod's second process
    assert (settler.dsn, settler.rail, settler.bind_address) == ("postgresql://p", "card-eur", POD_IP)
    assert (settler.bootstrap, settler.partition_count) == (worker.bootstrap, worker.partition_count)
    assert settler.metrics_port != worker.metrics_port
    assert settler_spec.gid == worker_spec.gid
    # every shard's database, through the kubelet's $(VAR) expansion of the operator's composed variable
    assert worker.ledger_dsns == ["postgresql://l", "postgresql://h1:5432,h2:5432/b"]
    writer_spec, relay_spec = specs_of("card-eur-a-ledger-writer")
    writer = writer_service.config_from_env(dict(writer_spec.env))
    assert (writer.dsn, writer.writer_id, writer.partitions) == (
        "postgresql://l",
        "card-eur-a-ledger-writer-1",
        list(range(8)),
    )
    assert writer.relay_in_process is False
    assert writer_spec.gid != gateway_spec.gid
    relay = relay_service.config_from_env(dict(relay_spec.env))  # the pod's second process
    assert (relay.dsn, relay.shard, relay.bind_address) == ("postgresql://l", "card-eur-a", POD_IP)
    assert relay.metrics_port != writer.metrics_port
    assert relay_spec.gid == writer_spec.gid
    # acceptance (25 ms budget) outweighs settlement (250 ms) for the CPU: its processes at a lower nice value
    accepting = {gateway_spec.niceness, worker_spec.niceness}
    settling = {settler_spec.niceness, writer_spec.niceness, relay_spec.niceness}
    assert accepting == {0}
    assert min(settling) > max(accepting)


def test_init_containers_are_refused_with_a_reason() -> None:
    the_pod = pod([{"name": "a", "args": ["x"]}])
    the_pod["spec"]["initContainers"] = [{"name": "init"}]
    with pytest.raises(PodConfigError, match="init containers"):
        process_specs(the_pod, PodObjects(), NODE, pod_ip=POD_IP, pod_dir=Path("/p"))


@pytest.mark.parametrize(
    ("cpu", "milli", "niceness"),
    [("1", 1000, 0), ("2", 2000, 0), ("500m", 500, 3), ("0.25", 250, 6), ("100m", 100, 10), (None, None, 19)],
)
def test_a_cpu_request_becomes_the_weight_a_cgroup_would_give_as_a_nice_value(
    cpu: str | None, milli: int | None, niceness: int
) -> None:
    container = {"name": "app", "resources": {"requests": {"cpu": cpu}} if cpu is not None else {}}
    assert cpu_request_milli(container) == milli
    assert niceness_for_cpu_request(milli) == niceness


def test_the_weights_of_two_requests_keep_their_ratio() -> None:
    """500m against 100m: 5 times the CPU under contention, as cgroups' cpu.weight would share it."""
    levels = niceness_for_cpu_request(100) - niceness_for_cpu_request(500)
    assert 1.25**levels == pytest.approx(5, rel=0.1)


def test_a_cpu_request_that_is_no_quantity_is_a_config_error() -> None:
    with pytest.raises(PodConfigError, match="CPU request 'lots'"):
        cpu_request_milli({"name": "app", "resources": {"requests": {"cpu": "lots"}}})
