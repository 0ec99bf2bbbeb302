"""Kubernetes children of rails and shards: service accounts, ConfigMap, Deployments, Services, HPAs, PDBs.

Each builder returns a ``ChildSet``: the manifests to server-side apply, and the objects that must not
exist (an HPA once autoscaling is switched off). Manifests carry only fields the operator means to own:
a Deployment under an HPA carries no ``replicas``, so the autoscaler keeps that field.

A workload's configuration is its environment and nothing else (the variables each service's
``config_from_env`` reads); the rail's ConfigMap carries only the delivered fraud policy.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from payplane_contracts.identity import WorkloadRole, workload_spiffe_id
from payplane_operator.api.v1alpha1 import (
    Kind,
    LedgerShard,
    ObjectMeta,
    PaymentRail,
    PullPolicy,
    Scaling,
    SecretKey,
)
from payplane_operator.desired import labels as lb
from payplane_operator.resources import Manifest, ObjectRef

GATEWAY_CONTAINER_PORT: Final = 8080
WORKER_GRPC_PORT: Final = 50051
METRICS_PORT: Final = 9090
RELAY_METRICS_PORT: Final = 9091  # the writer pods' second container, `payplane ledger-relay`
SETTLER_METRICS_PORT: Final = 9091  # the worker pods' second container, `payplane payment-settler`
CONFIG_MOUNT: Final = "/etc/payplane"
POLICY_KEY: Final = "fraud-policy.json"
WORKLOAD_API_MOUNT: Final = "/spiffe-workload-api"
WORKLOAD_API_SOCKET: Final = f"unix://{WORKLOAD_API_MOUNT}/spire-agent.sock"
SPIFFE_CSI_DRIVER: Final = "csi.spiffe.io"
SHARD_DSN_PREFIX: Final = "PAYPLANE_SHARD_DSN_"
REVISION_HISTORY: Final = 5
READINESS_PERIOD_S: Final = 2
# Requests make CPU autoscaling meaningful; a later issue exposes them in the CRDs.
# CPU requests by path. Accepting a payment (gateway, payment worker) has a 25 ms budget, settling it (the
# settler, the ledger writer and its relay) 250 ms: under contention the kernel shares the cores in the ratio
# of the requests (cgroups' CPU weights; on the process kubelet, nice values), so acceptance is served first
# and settlement catches up in the gaps: its processes use less than half the CPU acceptance's do.
ACCEPT_PATH_RESOURCES: Final = {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
SETTLE_PATH_RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
_ROLE_RESOURCES: Final = {
    WorkloadRole.GATEWAY: ACCEPT_PATH_RESOURCES,
    WorkloadRole.PAYMENT_WORKER: ACCEPT_PATH_RESOURCES,
    WorkloadRole.LEDGER_WRITER: SETTLE_PATH_RESOURCES,
}

APPS_V1: Final = "apps/v1"
CORE_V1: Final = "v1"
HPA_V2: Final = "autoscaling/v2"
POLICY_V1: Final = "policy/v1"


@dataclass(frozen=True)
class ChildSet:
    """What one owner's children should be: ``apply`` in order, and ``absent`` deleted if present."""

    apply: list[Manifest] = field(default_factory=list)
    absent: list[ObjectRef] = field(default_factory=list)


@dataclass(frozen=True)
class _Workload:
    role: WorkloadRole
    owner_kind: Kind
    meta: ObjectMeta
    rail: str
    shard: str | None
    scaling: Scaling
    image: str
    pull_policy: PullPolicy
    args: list[str]
    env: list[dict[str, Any]]
    ports: list[dict[str, Any]]
    config_map: str | None  # mounted at CONFIG_MOUNT when set
    config_hash: str
    rolling: dict[str, Any]
    readiness: dict[str, Any] | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    sidecars: list[dict[str, Any]] = field(default_factory=list)  # further containers of the pod

    @property
    def name(self) -> str:
        return lb.workload_name(self.role, self.meta.name)

    @property
    def labels(self) -> dict[str, str]:
        return lb.labels(self.role, self.meta.name, rail=self.rail, shard=self.shard)

    def object_meta(self, name: str | None = None) -> dict[str, Any]:
        return lb.object_meta(name or self.name, self.meta, self.owner_kind, self.labels)


def config_hash(*documents: Any) -> str:
    """A short content hash; put on pod templates so a configuration change rolls the pods."""
    canonical = json.dumps(documents, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def _service_account(workload: _Workload) -> Manifest:
    # One account per role and owner: its name is the SPIFFE ID's last segment (payplane_contracts.identity).
    return {
        "apiVersion": CORE_V1,
        "kind": "ServiceAccount",
        "metadata": workload.object_meta(),
        "automountServiceAccountToken": False,
    }


CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_spec(workload: _Workload) -> dict[str, Any]:
    mounts = [{"name": "spiffe-workload-api", "mountPath": WORKLOAD_API_MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [
        {"name": "spiffe-workload-api", "csi": {"driver": SPIFFE_CSI_DRIVER, "readOnly": True}},
    ]
    if workload.config_map is not None:
        mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "config", "configMap": {"name": workload.config_map}})
    container = {
        "name": workload.role.value,
        "image": workload.image,
        "imagePullPolicy": workload.pull_policy.value,
        "args": workload.args,
        "env": [
            {"name": "SPIFFE_ENDPOINT_SOCKET", "value": WORKLOAD_API_SOCKET},
            # every server of the pod listens on the pod's own address (a loopback-only server is unreachable)
            {"name": "PAYPLANE_BIND_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "PAYPLANE_METRICS_PORT", "value": str(METRICS_PORT)},
            *workload.env,
        ],
        "ports": [*workload.ports, {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": _ROLE_RESOURCES[workload.role],
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY,
    }
    if workload.readiness is not None:
        container["readinessProbe"] = {**workload.readiness, "periodSeconds": READINESS_PERIOD_S}
    spec: dict[str, Any] = {
        "serviceAccountName": workload.name,
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container, *workload.sidecars],
        "volumes": volumes,
    }
    if workload.node_selector:
        spec["nodeSelector"] = dict(workload.node_selector)
    return spec


def _deployment(workload: _Workload) -> Manifest:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": lb.selector_labels(workload.role, workload.meta.name)},
        "revisionHistoryLimit": REVISION_HISTORY,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": workload.rolling},
        "template": {
            "metadata": {
                "labels": workload.labels,
                "annotations": {lb.CONFIG_HASH_ANNOTATION: workload.config_hash},
            },
            "spec": _pod_spec(workload),
        },
    }
    if not workload.scaling.autoscaling.enabled:
        spec["replicas"] = workload.scaling.replicas
    return {"apiVersion": APPS_V1, "kind": "Deployment", "metadata": workload.object_meta(), "spec": spec}


def _hpa(workload: _Workload) -> Manifest:
    auto = workload.scaling.autoscaling
    return {
        "apiVersion": HPA_V2,
        "kind": "HorizontalPodAutoscaler",
        "metadata": workload.object_meta(),
        "spec": {
            "scaleTargetRef": {"apiVersion": APPS_V1, "kind": "Deployment", "name": workload.name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": auto.target_cpu_percent},
                    },
                }
            ],
        },
    }


def _pdb(workload: _Workload) -> Manifest:
    return {
        "apiVersion": POLICY_V1,
        "kind": "PodDisruptionBudget",
        "metadata": workload.object_meta(),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": lb.selector_labels(workload.role, workload.meta.name)},
        },
    }


def _scaled_children(workload: _Workload) -> ChildSet:
    """Service account, Deployment, PodDisruptionBudget, and an HPA exactly when autoscaling is on."""
    hpa_ref = ObjectRef(HPA_V2, "HorizontalPodAutoscaler", workload.meta.namespace, workload.name)
    apply = [_service_account(workload), _deployment(workload), _pdb(workload)]
    if workload.scaling.autoscaling.enabled:
        return ChildSet(apply=[*apply, _hpa(workload)])
    return ChildSet(apply=apply, absent=[hpa_ref])


def _service(workload: _Workload, *, service_type: str, headless: bool, ports: list[dict[str, Any]]) -> Manifest:
    spec: dict[str, Any] = {
        "selector": lb.selector_labels(workload.role, workload.meta.name),
        "ports": ports,
    }
    if headless:
        spec["clusterIP"] = "None"
    else:
        spec["type"] = service_type
    return {"apiVersion": CORE_V1, "kind": "Service", "metadata": workload.object_meta(), "spec": spec}


def _from_secret(variable: str, secret: SecretKey) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}


def worker_target(rail: PaymentRail) -> str:
    """How gateways reach the payment workers: every pod behind the headless Service (gRPC DNS resolver)."""
    worker = lb.workload_name(WorkloadRole.PAYMENT_WORKER, rail.meta.name)
    return f"dns:///{worker}.{rail.meta.namespace}.svc:{WORKER_GRPC_PORT}"


def _shared_env(rail: PaymentRail) -> list[dict[str, Any]]:
    env = [
        {"name": "PAYPLANE_RAIL", "value": rail.meta.name},
        _from_secret("PAYPLANE_PAYMENTS_DSN", rail.spec.payments_secret),
    ]
    if rail.spec.redis_secret is not None:
        env.append(_from_secret("PAYPLANE_REDIS_URL", rail.spec.redis_secret))
    return env


def gateway_env(rail: PaymentRail) -> list[dict[str, Any]]:
    """The environment ``payplane gateway`` reads (``payplane.services.gateway.config_from_env``)."""
    spec = rail.spec
    return [
        *_shared_env(rail),
        {"name": "PAYPLANE_WORKER_TARGETS", "value": worker_target(rail)},
        {"name": "PAYPLANE_HTTP_PORT", "value": str(GATEWAY_CONTAINER_PORT)},
        {"name": "PAYPLANE_RATE_PER_S", "value": str(spec.requests_per_second)},
        {"name": "PAYPLANE_RATE_BURST", "value": str(spec.burst)},
        {"name": "PAYPLANE_BODY_BYTES_MAX", "value": str(spec.gateway_body_bytes_max)},
    ]


def shard_dsn_variable(shard: str) -> str:
    """The variable holding one shard's DSN in a payment worker (shard names are DNS-1035 labels)."""
    return SHARD_DSN_PREFIX + shard.upper().replace("-", "_")


def ledger_dsns_env(ledger_databases: Mapping[str, SecretKey]) -> list[dict[str, Any]]:
    """Every shard database of the rail for the workers' balance reads: one variable per shard from its
    Secret, then ``PAYPLANE_LEDGER_DSNS`` composing them with Kubernetes ``$(VAR)`` expansion, one per
    line (always newline-terminated, so a multi-host URI's commas never split it)."""
    if not ledger_databases:
        return []
    shards = sorted(ledger_databases)
    per_shard = [_from_secret(shard_dsn_variable(shard), ledger_databases[shard]) for shard in shards]
    composed = "".join(f"$({shard_dsn_variable(shard)})\n" for shard in shards)
    return [*per_shard, {"name": "PAYPLANE_LEDGER_DSNS", "value": composed}]


def worker_env(
    rail: PaymentRail,
    *,
    kafka_bootstrap: str,
    trust_domain: str,
    ledger_databases: Mapping[str, SecretKey] | None = None,
) -> list[dict[str, Any]]:
    """The environment ``payplane payment-worker`` reads (``payplane.services.payment_worker``);
    ``ledger_databases``: shard name → its database Secret, for every LedgerShard of the rail."""
    spec, meta = rail.spec, rail.meta
    callers = [
        workload_spiffe_id(trust_domain, WorkloadRole.GATEWAY, meta.namespace, meta.name),
        workload_spiffe_id(trust_domain, WorkloadRole.ADMIN_CLI),
    ]
    return [
        *_shared_env(rail),
        {"name": "KAFKA_BOOTSTRAP", "value": kafka_bootstrap},
        {"name": "PAYPLANE_LEDGER_PARTITION_COUNT", "value": str(spec.ledger_partitions)},
        {"name": "PAYPLANE_ALLOWED_CALLERS", "value": ",".join(str(c) for c in callers)},
        {"name": "PAYPLANE_GRPC_PORT", "value": str(WORKER_GRPC_PORT)},
        {"name": "PAYPLANE_IDEMPOTENCY_RETENTION_S", "value": str(spec.idempotency_retention_s)},
        {"name": "PAYPLANE_AMOUNT_MIN_MINOR", "value": str(spec.min_amount_minor)},
        {"name": "PAYPLANE_AMOUNT_MAX_MINOR", "value": str(spec.max_amount_minor)},
        *ledger_dsns_env(ledger_databases or {}),
        {"name": "PAYPLANE_FRAUD_POLICY_FILE", "value": f"{CONFIG_MOUNT}/{POLICY_KEY}"},
        {"name": "PAYPLANE_SETTLEMENT", "value": "separate"},  # the pod's payment-settler container settles
    ]


def settler_env(rail: PaymentRail, *, kafka_bootstrap: str) -> list[dict[str, Any]]:
    """The environment ``payplane payment-settler`` reads (``payplane.services.payment_settler``)."""
    return [
        {"name": "PAYPLANE_RAIL", "value": rail.meta.name},
        _from_secret("PAYPLANE_PAYMENTS_DSN", rail.spec.payments_secret),
        {"name": "KAFKA_BOOTSTRAP", "value": kafka_bootstrap},
        {"name": "PAYPLANE_LEDGER_PARTITION_COUNT", "value": str(rail.spec.ledger_partitions)},
    ]


def rail_children(
    rail: PaymentRail,
    *,
    ledger_databases: Mapping[str, SecretKey],
    policy_document: dict[str, Any] | None,
    kafka_bootstrap: str,
    trust_domain: str,
    node_selector: Mapping[str, str] | None = None,
) -> ChildSet:
    """Everything a PaymentRail owns in Kubernetes, in apply order (accounts and config before pods).

    ``ledger_databases`` (shard name → database Secret) lists the rail's LedgerShards: the payment
    workers' environment, so adding or removing a shard rolls the workers (the gateways stay)."""
    meta, spec = rail.meta, rail.spec
    data: dict[str, str] = {}
    if policy_document is not None:
        data[POLICY_KEY] = json.dumps(policy_document, indent=2, sort_keys=True)
    config_map = {
        "apiVersion": CORE_V1,
        "kind": "ConfigMap",
        "metadata": lb.object_meta(
            lb.config_map_name(meta.name), meta, Kind.PAYMENT_RAIL, lb.labels(None, meta.name, rail=meta.name)
        ),
        "data": data,
    }
    # Each pod template carries the hash of its own environment; the policy is left out on purpose:
    # workers reload it from the mounted file, no restart.
    gateway_environment = gateway_env(rail)
    worker_environment = worker_env(
        rail, kafka_bootstrap=kafka_bootstrap, trust_domain=trust_domain, ledger_databases=ledger_databases
    )
    common: dict[str, Any] = {
        "owner_kind": Kind.PAYMENT_RAIL,
        "meta": meta,
        "rail": meta.name,
        "shard": None,
        "image": spec.image,
        "pull_policy": spec.pull_policy,
        "config_map": lb.config_map_name(meta.name),
        "rolling": {"maxUnavailable": 0, "maxSurge": 1},
        "node_selector": node_selector or {},
    }
    gateway = _Workload(
        role=WorkloadRole.GATEWAY,
        scaling=spec.gateway_scaling,
        args=["gateway"],
        env=gateway_environment,
        config_hash=config_hash(gateway_environment),
        ports=[{"name": "http", "containerPort": GATEWAY_CONTAINER_PORT, "protocol": "TCP"}],
        readiness={"httpGet": {"path": "/healthz", "port": "http"}},
        **common,
    )
    worker = _Workload(
        role=WorkloadRole.PAYMENT_WORKER,
        scaling=spec.worker_scaling,
        args=["payment-worker"],
        env=worker_environment,
        config_hash=config_hash(worker_environment),
        ports=[{"name": "grpc", "containerPort": WORKER_GRPC_PORT, "protocol": "TCP"}],
        # mTLS only, so no gRPC health probe (Kubernetes probes are plaintext): the port accepting is the signal
        readiness={"tcpSocket": {"port": "grpc"}},
        sidecars=[_settler_container(rail, settler_env(rail, kafka_bootstrap=kafka_bootstrap))],
        **common,
    )
    gateway_set, worker_set = _scaled_children(gateway), _scaled_children(worker)
    services = [
        _service(
            gateway,
            service_type=spec.gateway_exposure.value,
            headless=False,
            ports=[{"name": "http", "port": spec.gateway_port, "targetPort": "http", "protocol": "TCP"}],
        ),
        # headless: gateways resolve every worker and balance over them (gRPC round robin)
        _service(
            worker,
            service_type="ClusterIP",
            headless=True,
            ports=[{"name": "grpc", "port": WORKER_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}],
        ),
    ]
    return ChildSet(
        apply=[config_map, *gateway_set.apply, *worker_set.apply, *services],
        absent=[*gateway_set.absent, *worker_set.absent],
    )


def shard_children(
    shard: LedgerShard, rail: PaymentRail, *, kafka_bootstrap: str, node_selector: Mapping[str, str] | None = None
) -> ChildSet:
    """The shard's ledger writers: service account, Deployment, PDB and (when enabled) HPA.

    The environment is the one ``payplane ledger-writer`` reads; the writer migrates its database at
    startup (idempotent, forward-only), so no migration Job is needed.
    """
    spec = shard.spec
    outbox_env: list[dict[str, Any]] = [
        {"name": "PAYPLANE_RAIL", "value": rail.meta.name},
        {"name": "PAYPLANE_LEDGER_SHARD", "value": shard.meta.name},
        {"name": "KAFKA_BOOTSTRAP", "value": kafka_bootstrap},
        {
            "name": "PAYPLANE_LEDGER_DSN",
            "valueFrom": {"secretKeyRef": {"name": spec.database_secret, "key": spec.database_secret_key}},
        },
    ]
    env: list[dict[str, Any]] = [
        *outbox_env,
        {"name": "PAYPLANE_LEDGER_PARTITIONS", "value": f"{spec.first_partition}-{spec.last_partition}"},
        {"name": "PAYPLANE_LEDGER_PARTITION_COUNT", "value": str(rail.spec.ledger_partitions)},
        {"name": "PAYPLANE_WRITER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PAYPLANE_LEDGER_RELAY", "value": "separate"},
    ]
    writer = _Workload(
        role=WorkloadRole.LEDGER_WRITER,
        owner_kind=Kind.LEDGER_SHARD,
        meta=shard.meta,
        rail=rail.meta.name,
        shard=shard.meta.name,
        scaling=spec.writers,
        image=rail.spec.image,
        pull_policy=rail.spec.pull_policy,
        args=["ledger-writer"],
        env=env,
        ports=[],
        # the writer serves /metrics once its database is migrated and its partitions are claimed
        readiness={"httpGet": {"path": "/metrics", "port": "metrics"}},
        config_map=None,
        config_hash=config_hash(env, rail.spec.ledger_partitions),
        # one writer per partition at a time: never surge, replace one by one (fencing covers the overlap)
        rolling={"maxUnavailable": 1, "maxSurge": 0},
        node_selector=node_selector or {},
        sidecars=[_relay_container(rail, outbox_env)],
    )
    return _scaled_children(writer)


def _settler_container(rail: PaymentRail, env: list[dict[str, Any]]) -> dict[str, Any]:
    """`payplane payment-settler` beside the payment worker: relays the payments outbox and applies the
    ledger's outcomes in a process of its own, so the worker's one Python thread only answers payment
    calls (the worker runs with PAYPLANE_SETTLEMENT=separate). It needs no SPIFFE identity: it talks only
    to PostgreSQL and Kafka."""
    return _second_container(rail, "payment-settler", "settle-metrics", SETTLER_METRICS_PORT, env)


def _second_container(
    rail: PaymentRail, name: str, metrics_port_name: str, metrics_port: int, env: list[dict[str, Any]]
) -> dict[str, Any]:
    """A pod's second payplane process (``payplane <name>``): the rail's image, the pod's address, its own
    metrics port."""
    return {
        "name": name,
        "image": rail.spec.image,
        "imagePullPolicy": rail.spec.pull_policy.value,
        "args": [name],
        "env": [
            {"name": "PAYPLANE_BIND_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "PAYPLANE_METRICS_PORT", "value": str(metrics_port)},
            *env,
        ],
        "ports": [{"name": metrics_port_name, "containerPort": metrics_port, "protocol": "TCP"}],
        "resources": SETTLE_PATH_RESOURCES,  # a settler or a relay
        "securityContext": CONTAINER_SECURITY,
    }


def _relay_container(rail: PaymentRail, outbox_env: list[dict[str, Any]]) -> dict[str, Any]:
    """`payplane ledger-relay` beside the writer: publishes the shard's outbox in a process of its own, so
    the writer's one Python thread only decides and commits (the writer runs with
    PAYPLANE_LEDGER_RELAY=separate). It needs no SPIFFE identity: it talks only to PostgreSQL and Kafka."""
    return _second_container(rail, "ledger-relay", "relay-metrics", RELAY_METRICS_PORT, outbox_env)
