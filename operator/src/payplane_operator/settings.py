"""OperatorConfig: everything the operator is told by its environment, read once at startup.

The variable names are the ones ``payplane infra env`` prints, so a local run is
``eval "$(payplane infra env)"; python -m payplane_operator``. In a cluster the Helm chart sets them.
Standard library only (kopf is configured from this in ``handlers.lifecycle``).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from payplane_operator.errors import ConfigError

FIELD_MANAGER = "payplane-operator"
E = TypeVar("E", bound=StrEnum)


class IdentityMode(StrEnum):
    """How SPIRE tells the operator's workloads apart."""

    CLUSTER = "cluster"  # k8s workload attestor: k8s:ns + k8s:sa selectors
    LOCAL = "local"  # unix workload attestor: one unix:gid per workload (see payplane.devinfra.local_identity)


class WorkloadReadiness(StrEnum):
    """When a workload counts as ready for the WorkloadsReady condition."""

    AVAILABLE = "available"  # the Deployment reports Available (its pods run): what a cluster needs
    OBSERVED = "observed"  # the Deployment controller has observed the latest spec: for pod-less local runs


@dataclass(frozen=True)
class KubeConfig:
    kubeconfig: Path | None  # None: in-cluster service account
    request_timeout_s: float


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str  # what the operator uses for the admin API
    workload_bootstrap: str  # what the workloads are told to use (differs when the operator runs elsewhere)
    request_timeout_s: float


@dataclass(frozen=True)
class SpireConfig:
    server_socket: Path
    trust_domain: str
    parent_id: str  # SPIFFE ID every workload entry is delegated to (the agents' node alias)
    mode: IdentityMode
    request_timeout_s: float


@dataclass(frozen=True)
class OperatorConfig:
    kube: KubeConfig
    kafka: KafkaConfig
    spire: SpireConfig
    readiness: WorkloadReadiness
    drift_interval_s: float  # how often every object is re-reconciled, changed or not
    peering_name: str
    peering_priority: int
    peering_lifetime_s: int  # a replica silent this long is presumed dead and another takes over
    metrics_port: int | None = None  # Prometheus /metrics; None: not served
    metrics_address: str = "127.0.0.1"
    field_manager: str = FIELD_MANAGER
    node_selector: dict[str, str] = field(default_factory=dict)  # put on every workload's pods


def node_selector(env: Mapping[str, str]) -> dict[str, str]:
    """PAYPLANE_WORKLOAD_NODE_SELECTOR: ``key=value[,key=value…]`` (default: none)."""
    raw = env.get("PAYPLANE_WORKLOAD_NODE_SELECTOR", "").strip()
    selector = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"PAYPLANE_WORKLOAD_NODE_SELECTOR: {pair!r} is not key=value")
        selector[key.strip()] = value.strip()
    return selector


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: {why}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be within {low}..{high}, got {value}")
    return value


def _enum(env: Mapping[str, str], name: str, enum: type[E], default: E) -> E:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ConfigError(f"{name} must be one of {allowed}, got {raw!r}") from None


def drift_interval_s(env: Mapping[str, str] | None = None) -> float:
    """Seconds between level-based re-reconciles of every object (``PAYPLANE_DRIFT_INTERVAL_S``, default 60).

    Read on its own because kopf takes timer intervals when handlers are registered, at import.
    """
    return _float(os.environ if env is None else env, "PAYPLANE_DRIFT_INTERVAL_S", 60.0, 0.5, 3600.0)


def kube_config(env: Mapping[str, str] | None = None) -> KubeConfig:
    """How to reach the API server: ``KUBECONFIG`` if set, else the pod's service account."""
    env = os.environ if env is None else env
    kubeconfig = env.get("KUBECONFIG", "").strip()
    timeout_s = _float(env, "PAYPLANE_OPERATOR_REQUEST_TIMEOUT_S", 10.0, 0.5, 120.0)
    return KubeConfig(kubeconfig=Path(kubeconfig) if kubeconfig else None, request_timeout_s=timeout_s)


def load_config(env: Mapping[str, str] | None = None) -> OperatorConfig:
    """Read and check the environment; raises ConfigError naming the variable at fault."""
    env = os.environ if env is None else env
    bootstrap = _required(env, "KAFKA_BOOTSTRAP", "the Kafka bootstrap address the operator manages topics on")
    kube = kube_config(env)
    timeout_s = kube.request_timeout_s
    return OperatorConfig(
        kube=kube,
        kafka=KafkaConfig(
            bootstrap=bootstrap,
            workload_bootstrap=env.get("PAYPLANE_WORKLOAD_KAFKA_BOOTSTRAP", "").strip() or bootstrap,
            request_timeout_s=timeout_s,
        ),
        spire=SpireConfig(
            server_socket=Path(_required(env, "PAYPLANE_SPIRE_SERVER_SOCKET", "the SPIRE server's admin socket")),
            trust_domain=_required(env, "PAYPLANE_SPIRE_TRUST_DOMAIN", "the SPIFFE trust domain of the workloads"),
            parent_id=_required(env, "PAYPLANE_SPIRE_NODE_ID", "the parent SPIFFE ID of workload entries"),
            mode=_enum(env, "PAYPLANE_IDENTITY_MODE", IdentityMode, IdentityMode.CLUSTER),
            request_timeout_s=timeout_s,
        ),
        readiness=_enum(env, "PAYPLANE_WORKLOAD_READINESS", WorkloadReadiness, WorkloadReadiness.AVAILABLE),
        drift_interval_s=drift_interval_s(env),
        peering_name=env.get("PAYPLANE_PEERING_NAME", "").strip() or "payplane-operator",
        peering_priority=int(_float(env, "PAYPLANE_PEERING_PRIORITY", 0, -1_000_000, 1_000_000)),
        peering_lifetime_s=int(_float(env, "PAYPLANE_PEERING_LIFETIME_S", 60, 12, 3600)),
        metrics_port=int(_float(env, "PAYPLANE_METRICS_PORT", 0, 0, 65535)) or None,
        metrics_address=env.get("PAYPLANE_METRICS_ADDRESS", "").strip() or "127.0.0.1",
        node_selector=node_selector(env),
    )
