"""``payplane gateway``: the public HTTP/JSON edge of one rail, configured from the environment.

Environment: PAYPLANE_PAYMENTS_DSN (the rail's payments database: API clients), PAYPLANE_WORKER_TARGETS
(comma-separated ``localhost:<port>`` of payment workers, called over SPIFFE mTLS, round-robin),
PAYPLANE_REDIS_URL (rate limiting; optional: without it nothing is rate-limited), PAYPLANE_HTTP_PORT
(default 0: any free port, printed as ``LISTENING <port>``), PAYPLANE_RATE_PER_S (default 1000) and
PAYPLANE_RATE_BURST (default 2000) per client, PAYPLANE_BODY_BYTES_MAX (default 16384),
PAYPLANE_PUBLIC_GRPC_PORT (the same API over gRPC, default 0: any free port, printed as
``GRPC_LISTENING <port>`` after the HTTP line), PAYPLANE_METRICS_PORT (serve /metrics; 0 or unset: off),
PAYPLANE_BIND_ADDRESS (the address the HTTP and gRPC edges listen on, default 127.0.0.1; a Deployment
sets the pod's IP), SPIFFE_ENDPOINT_SOCKET (the SPIRE agent).
A ``dns:///`` worker target resolves every worker pod behind the headless Service and balances calls
over them (round robin, re-resolving when a worker goes away).
"""

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg
import grpc
import grpc.aio
from aiohttp import web
from asyncpg.exceptions import InternalClientError
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from payplane.adapters import api_clients, redis_edge
from payplane.adapters.grpc_mtls import RotatingChannel
from payplane.adapters.redis_edge import RedisEdge
from payplane.adapters.svid import SvidSource
from payplane.gateway import grpc_edge
from payplane.gateway.app import Admission, Gateway, Principal, WorkerPool
from payplane.gateway.grpc_edge import PublicPaymentService
from payplane.payments.errors import ApiError
from payplane.platform.metrics import GatewayMetrics
from payplane.services.entry import ConfigError, serve_from_env

log = logging.getLogger("payplane.gateway")
AUTH_TIMEOUT_S: Final = 5.0  # an unreachable payments database answers 503, not a hung request
# Calls to the workers wait for a ready replica (within their deadline) rather than fail at once while
# the channel connects: a replaced or newly scaled worker's address comes with the next resolution, and
# until the channel has connected to it a fail-fast call would answer the client 503.
_SERVICE_CONFIG: Final = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{"name": [{}], "waitForReady": True}]}
)
GRPC_OPTIONS: Final[list[tuple[str, str | int]]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.dns_min_time_between_resolutions_ms", 1_000),
]


@dataclass(frozen=True)
class GatewayConfig:
    dsn: str
    worker_targets: list[str]
    redis_url: str = ""
    http_port: int = 0
    rate_per_s: float = 1000.0
    rate_burst: int = 2000
    body_bytes_max: int = 16 * 1024
    public_grpc_port: int = 0
    metrics_port: int = 0  # serve /metrics at this port (0: off)
    bind_address: str = "127.0.0.1"


def config_from_env(env: dict[str, str]) -> GatewayConfig:
    missing = [k for k in ("PAYPLANE_PAYMENTS_DSN", "PAYPLANE_WORKER_TARGETS") if not env.get(k)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")
    try:
        return GatewayConfig(
            dsn=env["PAYPLANE_PAYMENTS_DSN"],
            worker_targets=[t.strip() for t in env["PAYPLANE_WORKER_TARGETS"].split(",") if t.strip()],
            redis_url=env.get("PAYPLANE_REDIS_URL", ""),
            http_port=int(env.get("PAYPLANE_HTTP_PORT", "0")),
            rate_per_s=float(env.get("PAYPLANE_RATE_PER_S", "1000")),
            rate_burst=int(env.get("PAYPLANE_RATE_BURST", "2000")),
            body_bytes_max=int(env.get("PAYPLANE_BODY_BYTES_MAX", str(16 * 1024))),
            public_grpc_port=int(env.get("PAYPLANE_PUBLIC_GRPC_PORT", "0")),
            metrics_port=int(env.get("PAYPLANE_METRICS_PORT", "0")),
            bind_address=env.get("PAYPLANE_BIND_ADDRESS") or "127.0.0.1",
        )
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


async def run(config: GatewayConfig) -> int:
    pool = await asyncpg.create_pool(config.dsn, min_size=1, max_size=4, timeout=10)
    redis = RedisEdge(config.redis_url) if config.redis_url else None
    source = SvidSource()
    channels = [RotatingChannel(source, target, GRPC_OPTIONS) for target in config.worker_targets]

    async def authenticate(key: str) -> Principal | None:
        try:
            client = await asyncio.wait_for(api_clients.authenticate(pool, key), AUTH_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError) as exc:
            log.warning("API key lookup failed: %r", exc)
            raise ApiError("service_unavailable", "API keys cannot be checked right now; retry shortly") from None
        return Principal(client.id, client.role) if client else None

    async def admission(client_id: str, idempotency: tuple[str, str] | None) -> Admission:
        if redis is None:
            return Admission(True)
        return _admission(await redis.admit(client_id, config.rate_per_s, config.rate_burst, idempotency))

    async def batch_admission(requests: Sequence[tuple[str, tuple[str, str]]]) -> list[Admission]:
        if redis is None:
            return [Admission(True)] * len(requests)
        return [_admission(a) for a in await redis.admit_many(config.rate_per_s, config.rate_burst, requests)]

    metrics = GatewayMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address)
    gateway = Gateway(
        WorkerPool([c.channel for c in channels]),
        authenticate,
        admission,
        batch_admission,
        config.body_bytes_max,
        observer=metrics,
    )
    runner = web.AppRunner(gateway.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.bind_address, config.http_port)
    await site.start()
    port = runner.addresses[0][1]
    grpc_server, grpc_port = await _public_grpc_server(gateway, config)
    print(f"LISTENING {port}", flush=True)
    print(f"GRPC_LISTENING {grpc_port}", flush=True)
    workers = ", ".join(config.worker_targets)
    log.info(
        "gateway serving on http://%s:%d and gRPC port %d (workers: %s)", config.bind_address, port, grpc_port, workers
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        return 0
    finally:
        await grpc_server.stop(grace=5.0)
        await runner.cleanup()
        for channel in channels:
            await channel.close()
        if redis is not None:
            await redis.close()
        await pool.close()
        source.close()


def _admission(answer: redis_edge.Admission) -> Admission:
    lease_state, lease_token = (answer.lease.state.value, answer.lease.token) if answer.lease else ("", "")
    return Admission(answer.rate.allowed, answer.rate.retry_after_s, lease_state, lease_token)


async def _public_grpc_server(gateway: Gateway, config: GatewayConfig) -> tuple[grpc.aio.Server, int]:
    """The public gRPC edge, with health checking and reflection. Plaintext like the HTTP edge: TLS for
    external clients terminates in front of the gateway."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", config.body_bytes_max)])
    server.add_generic_rpc_handlers((PublicPaymentService(gateway).handler(),))
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((grpc_edge.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.bind_address}:{config.public_grpc_port}")
    await server.start()
    await health_servicer.set(grpc_edge.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "gateway", help="run the public REST gateway of a rail (configured from the environment)"
    )
    parser.set_defaults(handler=main)


def main(_args: argparse.Namespace) -> int:
    return serve_from_env(config_from_env, run, log)
