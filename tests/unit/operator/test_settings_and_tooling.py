"""The operator's configuration from the environment, and the build-time pieces around it."""

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from payplane.devinfra import helm_build, rulecheck_build, versions
from payplane_operator.clients.metrics import OperatorMetrics
from payplane_operator.errors import ConfigError
from payplane_operator.handlers.boundary import retry_delay_s
from payplane_operator.settings import IdentityMode, WorkloadReadiness, load_config

REPO = Path(__file__).resolve().parents[3]
ENV = {
    "KUBECONFIG": "/tmp/kubeconfig",
    "KAFKA_BOOTSTRAP": "127.0.0.1:17492",
    "PAYPLANE_SPIRE_SERVER_SOCKET": "/run/spire/admin.sock",
    "PAYPLANE_SPIRE_TRUST_DOMAIN": "payplane.local",
    "PAYPLANE_SPIRE_NODE_ID": "spiffe://payplane.local/payplane/local-node",
}


def test_the_infra_env_is_enough_and_defaults_suit_a_cluster() -> None:
    config = load_config(ENV)
    assert config.kafka.workload_bootstrap == "127.0.0.1:17492"
    assert config.spire.mode is IdentityMode.CLUSTER
    assert config.readiness is WorkloadReadiness.AVAILABLE
    assert config.drift_interval_s == 60
    assert config.kube.kubeconfig == Path("/tmp/kubeconfig")
    assert config.metrics_port is None


def test_metrics_are_served_only_when_a_port_is_given() -> None:
    config = load_config({**ENV, "PAYPLANE_METRICS_PORT": "9090", "PAYPLANE_METRICS_ADDRESS": "0.0.0.0"})
    assert (config.metrics_port, config.metrics_address) == (9090, "0.0.0.0")
    assert load_config({**ENV, "PAYPLANE_METRICS_PORT": "9090"}).metrics_address == "127.0.0.1"


def test_a_workload_node_selector_is_key_value_pairs() -> None:
    assert load_config(ENV).node_selector == {}
    selector = load_config({**ENV, "PAYPLANE_WORKLOAD_NODE_SELECTOR": "kubernetes.io/hostname=n1, pool = pay"})
    assert selector.node_selector == {"kubernetes.io/hostname": "n1", "pool": "pay"}


def test_no_kubeconfig_means_in_cluster() -> None:
    assert load_config({k: v for k, v in ENV.items() if k != "KUBECONFIG"}).kube.kubeconfig is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KAFKA_BOOTSTRAP", "", "KAFKA_BOOTSTRAP is not set"),
        ("PAYPLANE_IDENTITY_MODE", "k8s", "must be one of cluster, local"),
        ("PAYPLANE_DRIFT_INTERVAL_S", "soon", "must be a number"),
        ("PAYPLANE_DRIFT_INTERVAL_S", "0", "within"),
        ("PAYPLANE_METRICS_PORT", "70000", "within"),
        ("PAYPLANE_WORKLOAD_NODE_SELECTOR", "kubernetes.io/hostname", "is not key=value"),
    ],
)
def test_a_bad_environment_is_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**ENV, name: value})


def test_retry_delays_double_up_to_a_minute() -> None:
    assert [retry_delay_s(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay_s(10_000) == 60


def test_the_spire_api_module_pin_follows_the_infrastructure_pin() -> None:
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"^SPIRE_API_SDK := (\S+)$", makefile, re.MULTILINE)
    assert pinned is not None
    assert pinned.group(1) == versions.SPIRE_API_SDK


def test_generated_stubs_are_ignored_by_git() -> None:
    assert "operator/src/payplane_operator/_gen/" in (REPO / ".gitignore").read_text()


FULL, LIGHT = {"pass": "full"}, {"pass": "light"}


def test_operator_metrics_count_results_and_track_readiness() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.reconciled("PaymentRail", ("ns", "a"), ready=True, retry=False, seconds=0.1)
    metrics.reconciled("PaymentRail", ("ns", "b"), ready=False, retry=True, seconds=0.2)
    metrics.reconciled("PaymentRail", ("ns", "b"), ready=False, retry=False, seconds=0.2, light=True)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("payplane_operator_reconciles_total", kind="PaymentRail", result="ready", **FULL) == 1
    assert value("payplane_operator_reconciles_total", kind="PaymentRail", result="error", **FULL) == 1
    assert value("payplane_operator_reconciles_total", kind="PaymentRail", result="not_ready", **LIGHT) == 1
    assert value("payplane_operator_reconcile_seconds_count", kind="PaymentRail") == 3
    assert value("payplane_operator_objects", kind="PaymentRail", ready="false") == 1
    metrics.forget("PaymentRail", ("ns", "b"))
    assert value("payplane_operator_objects", kind="PaymentRail", ready="false") == 0
    assert value("payplane_operator_objects", kind="PaymentRail", ready="true") == 1


def test_helm_is_built_with_its_version_stamped_in() -> None:
    assert versions.HELM.startswith("v3.")
    flags = helm_build.helm_ldflags(versions.HELM)
    assert f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}" in flags
    assert helm_build.helm_dirs(Path("/c")).root == Path(f"/c/helm-{versions.HELM}")


def test_rulecheck_is_keyed_by_the_prometheus_pin_and_its_source() -> None:
    dirs = rulecheck_build.rulecheck_dirs(Path("/c"))
    assert dirs.root.name.startswith(f"rulecheck-{versions.PROMETHEUS_MODULE}-")
    assert len(dirs.root.name.rsplit("-", 1)[1]) == 8  # a hash of main.go: an edit builds anew
    assert rulecheck_build.SOURCE.is_file()
