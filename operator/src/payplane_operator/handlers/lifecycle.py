"""Operator start, stop and health: configure kopf from OperatorConfig, build the clients once, keep the
controller in kopf's memo, and report liveness."""

import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf

from payplane_operator.clients.kafka_admin import KafkaAdmin
from payplane_operator.clients.kubernetes import KubeClient, load_credentials
from payplane_operator.clients.metrics import OperatorMetrics
from payplane_operator.clients.spire import SpireEntries
from payplane_operator.clients.workload_status import WorkloadStatusClient
from payplane_operator.errors import ConfigError
from payplane_operator.handlers.boundary import controller_of
from payplane_operator.limits import (
    WATCH_CLIENT_TIMEOUT_S,
    WATCH_CONNECT_TIMEOUT_S,
    WATCH_INACTIVITY_TIMEOUT_S,
    WATCH_SERVER_TIMEOUT_S,
    WORKLOAD_STATUS_PARALLEL_MAX,
    WORKLOAD_STATUS_TIMEOUT_S,
)
from payplane_operator.reconcile.controller import EVENT_COMPONENT, Controller, Indexes
from payplane_operator.reconcile.ports import Deps
from payplane_operator.settings import OperatorConfig, kube_config, load_config

FINALIZER = "payplane.io/finalizer"
ANNOTATION_PREFIX = "payplane.io"


@dataclass(frozen=True)
class Clients:
    kube: KubeClient
    kafka: KafkaAdmin
    spire: SpireEntries
    workload_status: WorkloadStatusClient

    async def close(self) -> None:
        await self.workload_status.close()
        await self.kafka.close()
        await self.spire.close()
        await self.kube.close()


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's knobs, set from our configuration (peering comes from the command line or ``__main__``)."""
    settings.peering.lifetime = config.peering_lifetime_s  # heartbeats every lifetime minus 5-10 s
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Silent watch streams are kopf's best-known failure: bound every stream and reconnect idle ones.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT_S
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT_S
    # No watch on CustomResourceDefinitions (and so no RBAC for them): the CRDs exist before the operator
    # starts (the chart installs them first); a CRD installed later is picked up at the next restart.
    settings.scanning.disabled = True
    settings.networking.request_timeout = max(30.0, config.kube.request_timeout_s * 3)
    # Our own events say what changed; kopf's per-handler "succeeded" events would only add noise.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = EVENT_COMPONENT


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    try:
        config = load_config()
    except ConfigError as error:
        raise kopf.PermanentError(str(error)) from error
    configure(settings, config)
    clients = Clients(
        kube=await KubeClient.connect(config.kube),
        kafka=KafkaAdmin(config.kafka),
        spire=SpireEntries(config.spire),
        workload_status=WorkloadStatusClient(WORKLOAD_STATUS_TIMEOUT_S, WORKLOAD_STATUS_PARALLEL_MAX),
    )
    indexes = Indexes(
        rails=kwargs["rails"],
        rails_by_name=kwargs["rails_by_name"],
        shards_by_rail=kwargs["shards_by_rail"],
        policies=kwargs["policies"],
        rails_by_policy=kwargs["rails_by_policy"],
    )
    metrics = OperatorMetrics()
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port, config.metrics_address)
    deps = Deps(
        kube=clients.kube,
        kafka=clients.kafka,
        spire=clients.spire,
        config=config,
        metrics=metrics,
        workload_status=clients.workload_status,
    )
    controller = Controller(deps, indexes)
    controller.start()
    memo.controller = controller
    memo.clients = clients
    logger.info(
        "payplane operator: Kafka %s, SPIRE %s (%s mode), readiness %s, drift every %.0f s",
        config.kafka.bootstrap,
        config.spire.server_socket,
        config.spire.mode.value,
        config.readiness.value,
        config.drift_interval_s,
    )


def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's own API access, from the same credentials as ``clients.kubernetes`` (read at login time)."""
    credentials = load_credentials(kube_config())
    scheme, _space, token = (credentials.authorization or "").partition(" ")
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_path,
        insecure=not credentials.verify,
        certificate_path=credentials.cert_path,
        private_key_path=credentials.key_path,
        scheme=scheme or None,
        token=token or None,
    )


async def stop(memo: kopf.Memo, **_: Any) -> None:
    await controller_of(memo).stop()
    await cast(Clients, memo.clients).close()


def reconciling(memo: kopf.Memo, **indexes: Any) -> str:
    """Fails (HTTP 500 from ``--liveness``) when objects exist but the operator stopped reconciling them."""
    controller = controller_of(memo)
    objects = sum(len(indexes[name]) for name in ("rails", "shards_by_rail", "policies"))
    healthy, text = controller.healthy(objects, controller.deps.config.drift_interval_s)
    if not healthy:
        raise RuntimeError(text)
    return text


def register(registry: kopf.OperatorRegistry) -> None:
    # A registry of our own starts without kopf's default login handlers.
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    kopf.on.probe(id="reconciling", registry=registry)(reconciling)
