"""The operator's configuration from the environment, and the build-time pieces around it."""

import re
from pathlib import Path

import pytest

from payplane.devinfra import versions
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


def test_no_kubeconfig_means_in_cluster() -> None:
    assert load_config({k: v for k, v in ENV.items() if k != "KUBECONFIG"}).kube.kubeconfig is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KAFKA_BOOTSTRAP", "", "KAFKA_BOOTSTRAP is not set"),
        ("PAYPLANE_IDENTITY_MODE", "k8s", "must be one of cluster, local"),
        ("PAYPLANE_DRIFT_INTERVAL_S", "soon", "must be a number"),
        ("PAYPLANE_DRIFT_INTERVAL_S", "0", "within"),
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
