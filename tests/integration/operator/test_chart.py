"""The Helm chart against the real API server, and its RBAC proved sufficient and minimal.

- ``helm lint`` and ``helm template`` pass; without the required values they fail naming the value.
- ``helm install`` into a fresh namespace applies every rendered object (namespaced mode: the operator
  watches one namespace, bound there by a RoleBinding to the chart's ClusterRole, with a KopfPeering).
- The operator runs as a local process with the credentials of the chart's ServiceAccount (a token from
  the TokenRequest API in a kubeconfig): a rail with two shards becomes Ready, and deleting it removes its
  children and SPIRE entries, with no RBAC denial in the operator's log.
- The same credentials are refused what the role rightly leaves out (deleting a Namespace, reading a
  Secret outside the watched namespace, listing Secrets, reading a Pod or its log, deleting a Deployment,
  granting RBAC, ...).
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Infra
from tests.integration.operator.conftest import Cluster, wait_for

CHART = Path(__file__).resolve().parents[3] / "charts" / "payplane"
KUBE_VERSION = "1.34.4"
HELM_TIMEOUT_S = 120.0
START_S = 60.0
TOKEN_TTL_S = 3600
RELEASE = "pp"
SA_NAME = f"{RELEASE}-payplane-operator"  # the chart's default: <release>-<chart>-operator
DENIAL_MARKERS = (" 403 ", "forbidden:", "Forbidden", "Not enough permissions")  # (resourceVersions hold "403")
pytestmark = pytest.mark.timeout(600)


def _required_values(infra: Infra) -> list[str]:
    return [
        f"kafka.bootstrap={infra['KAFKA_BOOTSTRAP']}",
        f"spire.trustDomain={infra['PAYPLANE_SPIRE_TRUST_DOMAIN']}",
        f"spire.nodeId={infra['PAYPLANE_SPIRE_NODE_ID']}",
    ]


def helm(infra: Infra, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = infra.endpoints.get("PAYPLANE_HELM", "")
    if not binary or not Path(binary).is_file():
        pytest.fail(f"helm is missing ({binary!r}): `payplane infra up` builds it into the cache (make infra-up)")
    result = subprocess.run(
        [binary, "--kubeconfig", infra["KUBECONFIG"], *args],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_S,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def _set_flags(values: list[str]) -> list[str]:
    return [flag for value in values for flag in ("--set", value)]


def test_lint_and_template(infra: Infra) -> None:
    values = _set_flags(_required_values(infra))
    lint = helm(infra, "lint", str(CHART), "--strict", *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    rendered = helm(infra, "template", "t", str(CHART), "--kube-version", KUBE_VERSION, *values).stdout
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(rendered) if doc})
    assert kinds == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    missing = helm(infra, "template", "t", str(CHART), "--kube-version", KUBE_VERSION, check=False)
    assert missing.returncode != 0
    assert "kafka.bootstrap is required" in missing.stderr


def _rulecheck(infra: Infra, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = infra.endpoints.get("PAYPLANE_RULECHECK", "")
    if not binary or not Path(binary).is_file():
        pytest.fail(f"rulecheck is missing ({binary!r}): `payplane infra up` builds it into the cache (make infra-up)")
    return subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
    )


def test_alert_rules_and_dashboard_queries_pass_prometheus_own_checks(infra: Infra, tmp_path: Path) -> None:
    """Prometheus's rule loader (YAML shape, PromQL, annotation templates) and PromQL parser, via rulecheck."""
    values = _set_flags([*_required_values(infra), "monitoring.alerts.prometheusRule=true"])
    rendered = helm(infra, "template", "t", str(CHART), "--kube-version", KUBE_VERSION, *values).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-alert-rules")]
    (prometheus_rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    plain = tmp_path / "rules.yaml"
    plain.write_text(config_map["data"]["rules.yaml"])
    operator_rule = tmp_path / "prometheusrule.yaml"
    operator_rule.write_text(yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}))
    for path in (plain, operator_rule):
        checked = _rulecheck(infra, "rules", str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"{path}: 3 groups, 10 rules" in checked.stdout

    exprs = [t["expr"] for p in sorted((CHART / "dashboards").glob("*.json")) for t in _targets(p)]
    checked = _rulecheck(infra, "exprs", stdin="\n".join(exprs))
    assert checked.returncode == 0, checked.stdout
    assert f"{len(exprs)} expressions" in checked.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}))
    refused = _rulecheck(infra, "rules", str(broken))
    assert refused.returncode == 1
    assert "unclosed left parenthesis" in refused.stdout


def _targets(dashboard: Path) -> list[dict[str, Any]]:
    return [target for panel in json.loads(dashboard.read_text())["panels"] for target in panel["targets"]]


def _bearer_kubeconfig(infra: Infra, token: str, path: Path) -> Path:
    admin = yaml.safe_load(Path(infra["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = (
        cluster.get("certificate-authority-data")
        or base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    )
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster["server"], "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


@dataclass
class Installed:
    release_namespace: str
    watched: Cluster
    kubeconfig: Path  # the chart ServiceAccount's credentials


def _create_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def _delete_namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def installed(infra: Infra, api: client.ApiClient, crds: None, run_id: str) -> Iterator[Installed]:
    core = client.CoreV1Api(api)
    release_ns, watched_ns = f"chart-{run_id}", f"rails-{run_id}"
    _create_namespace(core, watched_ns)
    values = [*_required_values(infra), f"operator.watchNamespaces={{{watched_ns}}}"]
    try:
        helm(
            infra,
            "install",
            RELEASE,
            str(CHART),
            "-n",
            release_ns,
            "--create-namespace",
            "--wait=false",
            *_set_flags(values),
        )
        token = core.create_namespaced_service_account_token(
            SA_NAME,
            release_ns,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_TTL_S)
            ),
        ).status.token
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = _bearer_kubeconfig(infra, token, Path(tmp) / "operator.kubeconfig")
            yield Installed(release_ns, Cluster(infra=infra, api=api, namespace=watched_ns), kubeconfig)
    finally:
        helm(infra, "uninstall", RELEASE, "-n", release_ns, "--wait", check=False)
        _delete_namespace(core, release_ns)
        _delete_namespace(core, watched_ns)


def test_install_applies_every_rendered_object(installed: Installed, api: client.ApiClient) -> None:
    ns, watched = installed.release_namespace, installed.watched.namespace
    apps, core, rbac = client.AppsV1Api(api), client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    deployment = apps.read_namespaced_deployment(SA_NAME, ns)
    assert deployment.spec.strategy.type == "Recreate"
    container = deployment.spec.template.spec.containers[0]
    assert container.liveness_probe.http_get.path == "/healthz"
    env = {e.name: e.value for e in container.env}
    assert env["PAYPLANE_WATCH_NAMESPACES"] == watched
    assert deployment.spec.template.spec.service_account_name == SA_NAME
    assert core.read_namespaced_service_account(SA_NAME, ns) is not None
    role = rbac.read_cluster_role(SA_NAME)
    assert all("*" not in (rule.verbs + (rule.resources or [])) for rule in role.rules), "no wildcards"
    binding = rbac.read_namespaced_role_binding(SA_NAME, watched)
    assert binding.role_ref.name == SA_NAME
    assert binding.subjects[0].namespace == ns
    with pytest.raises(ApiException) as no_cluster_binding:
        rbac.read_cluster_role_binding(SA_NAME)
    assert no_cluster_binding.value.status == 404, "namespaced mode must not bind cluster-wide"
    peering = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kopf.dev", "v1", watched, "kopfpeerings", "payplane-operator"
    )
    assert peering["metadata"]["name"] == "payplane-operator"
    dashboards = core.list_namespaced_config_map(ns, label_selector="grafana_dashboard=1").items
    assert sorted(c.metadata.name for c in dashboards) == [
        f"{RELEASE}-payplane-dashboard-{d}" for d in ("ledger", "operator", "payments")
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningOperator:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_url: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def operator_as_service_account(infra: Infra, installed: Installed) -> Iterator[RunningOperator]:
    """``python -m payplane_operator`` with exactly the chart's permissions, as the chart configures it
    (mandatory peering on the chart's KopfPeering), but local SPIRE selectors and observed readiness."""
    metrics_port = _free_port()
    log = Path(tempfile.mkdtemp()) / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(installed.kubeconfig),
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_SPIRE_SERVER_SOCKET": infra["PAYPLANE_SPIRE_SERVER_SOCKET"],
        "PAYPLANE_SPIRE_TRUST_DOMAIN": infra["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        "PAYPLANE_SPIRE_NODE_ID": infra["PAYPLANE_SPIRE_NODE_ID"],
        "PAYPLANE_IDENTITY_MODE": "local",
        "PAYPLANE_WORKLOAD_READINESS": "observed",
        "PAYPLANE_DRIFT_INTERVAL_S": "120",  # no timer pass within the test: every pass has a cause
        "PAYPLANE_LOG_LEVEL": "debug",  # every pass is logged
        "PAYPLANE_WATCH_NAMESPACES": installed.watched.namespace,
        "PAYPLANE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{_free_port()}/healthz",
        "PAYPLANE_METRICS_PORT": str(metrics_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "payplane_operator"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    running = RunningOperator(process, log, f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        wait_for("the operator to log its start", lambda: "payplane operator:" in running.text(), START_S)
        yield running
    finally:
        if process.poll() is None:
            installed.watched.delete_all()  # finalizers need the operator
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        print(running.text()[-20000:])


def _secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}}


def _manifests(rail: str) -> list[dict[str, Any]]:
    spec = {
        "currency": "EUR",
        "amountLimits": {"maxMinor": 1_000_000},
        "payments": {"database": {"secretRef": {"name": "payments-db"}}},
        "ledger": {"partitions": 4},
        "topics": {"partitions": 1},
    }
    shards = [
        {
            "apiVersion": "payplane.io/v1alpha1",
            "kind": "LedgerShard",
            "metadata": {"name": f"{rail}-{suffix}"},
            "spec": {
                "railRef": {"name": rail},
                "partitions": {"first": first, "last": last},
                "database": {"secretRef": {"name": f"{rail}-{suffix}-db"}},
            },
        }
        for suffix, first, last in (("a", 0, 1), ("b", 2, 3))
    ]
    return [
        _secret("payments-db", "dsn", "postgresql://payments@db/payments"),
        *(_secret(f"{rail}-{s}-db", "dsn", f"postgresql://ledger@db/{rail}_{s}") for s in ("a", "b")),
        {"apiVersion": "payplane.io/v1alpha1", "kind": "PaymentRail", "metadata": {"name": rail}, "spec": spec},
        *shards,
    ]


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_the_chart_role_runs_a_rail_to_ready_and_cleans_it_up(
    installed: Installed, operator_as_service_account: RunningOperator, run_id: str
) -> None:
    cluster, running = installed.watched, operator_as_service_account
    rail = f"chart-{run_id}"
    cluster.rails_seen.add(rail)
    cluster.apply(*_manifests(rail))
    cluster.wait_condition("PaymentRail", rail, "Ready", generation=1, timeout_s=90)
    for shard in (f"{rail}-a", f"{rail}-b"):
        cluster.wait_condition("LedgerShard", shard, "Ready", generation=1)
    deployments = {d.metadata.name for d in cluster.apps.list_namespaced_deployment(cluster.namespace).items}
    assert deployments == {
        f"{rail}-gateway",
        f"{rail}-payment-worker",
        f"{rail}-a-ledger-writer",
        f"{rail}-b-ledger-writer",
    }
    assert len(cluster.entries()) == 4, "gateway, worker and two writer entries"
    counted = [
        line
        for line in _metrics(running.metrics_url).splitlines()
        if line.startswith('payplane_operator_reconciles_total{kind="PaymentRail"') and 'result="ready"' in line
    ]
    assert counted, "the operator's metrics count the rail's ready reconciles"

    # A status-only change of a child Deployment is judged by the light pass, not a full re-apply.
    full_passes = running.text().count(f"reconciled PaymentRail {cluster.namespace}/{rail} ")
    cluster.apps.patch_namespaced_deployment_status(
        f"{rail}-gateway", cluster.namespace, {"status": {"replicas": 1, "readyReplicas": 1}}
    )
    wait_for(
        "the light pass to report the ready pod",
        lambda: f"refreshed readiness of PaymentRail {cluster.namespace}/{rail} " in running.text(),
    )
    assert running.text().count(f"reconciled PaymentRail {cluster.namespace}/{rail} ") == full_passes

    cluster.kubectl("delete", f"paymentrail/{rail}", f"ledgershard/{rail}-a", f"ledgershard/{rail}-b", "--wait=true")
    wait_for("the rail's SPIRE entries to be removed", lambda: not cluster.entries())

    def children_gone() -> bool:
        apps = cluster.apps.list_namespaced_deployment(cluster.namespace).items
        services = cluster.core.list_namespaced_service(cluster.namespace).items
        maps = [
            c
            for c in cluster.core.list_namespaced_config_map(cluster.namespace).items
            if c.metadata.name != "kube-root-ca.crt"
        ]
        return not apps and not services and not maps

    wait_for("the garbage collector to remove the rail's children", children_gone, timeout_s=90)
    denials = [line for line in running.text().splitlines() if any(m in line for m in DENIAL_MARKERS)]
    assert not denials, "the operator met RBAC denials:\n" + "\n".join(denials[:20])


def _forbidden(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_the_service_account_is_refused_what_the_role_leaves_out(
    installed: Installed, infra: Infra, api: client.ApiClient, run_id: str
) -> None:
    watched, release_ns = installed.watched.namespace, installed.release_namespace
    admin_core = client.CoreV1Api(api)
    admin_core.create_namespaced_secret(
        release_ns, client.V1Secret(metadata=client.V1ObjectMeta(name="elsewhere"), string_data={"k": "v"})
    )
    admin_core.create_namespaced_secret(
        watched, client.V1Secret(metadata=client.V1ObjectMeta(name="named-by-a-spec"), string_data={"dsn": "x"})
    )
    sa_api = k8s_config.new_client_from_config(config_file=str(installed.kubeconfig))
    core, apps, rbac = client.CoreV1Api(sa_api), client.AppsV1Api(sa_api), client.RbacAuthorizationV1Api(sa_api)
    try:
        assert core.read_namespaced_secret("named-by-a-spec", watched).data["dsn"], "get of a named Secret is granted"
        assert core.list_namespaced_pod(watched).items is not None, "list of Pods (to read their /status) is granted"
        refused = {
            "delete a Namespace": lambda: core.delete_namespace(watched),
            "read a Secret outside the watched namespace": lambda: core.read_namespaced_secret("elsewhere", release_ns),
            "list Secrets": lambda: core.list_namespaced_secret(watched),
            "list Pods outside the watched namespace": lambda: core.list_namespaced_pod(release_ns),
            "read a Pod (only listing by label is granted)": lambda: core.read_namespaced_pod("anything", watched),
            "read a Pod's log": lambda: core.read_namespaced_pod_log("anything", watched),
            "delete a Deployment": lambda: apps.delete_namespaced_deployment("anything", watched),
            "create a ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(
                client.V1ClusterRoleBinding(
                    metadata=client.V1ObjectMeta(name=f"escalate-{run_id}"),
                    role_ref=client.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
                    ),
                    subjects=[client.RbacV1Subject(kind="ServiceAccount", name=SA_NAME, namespace=release_ns)],
                )
            ),
            "list rails in another namespace": lambda: client.CustomObjectsApi(sa_api).list_namespaced_custom_object(
                "payplane.io", "v1alpha1", release_ns, "paymentrails"
            ),
        }
        statuses = {what: _forbidden(call) for what, call in refused.items()}
        assert statuses == dict.fromkeys(refused, 403)
    finally:
        sa_api.close()
