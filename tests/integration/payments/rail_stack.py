"""One rail's payment path as real processes, built piece by piece so fault tests can restart, kill or
re-route any of them: its databases, Kafka topics and SPIRE entries (unique to the run, removed
afterwards), API clients, and ``spawn_writer`` / ``spawn_worker`` / ``spawn_settler`` / ``spawn_gateway``
with environment overrides (another Kafka, a proxied DSN or Redis, a fixed port to restart on).
"""

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from payplane.adapters import api_clients
from payplane.adapters.payments_store import MIGRATIONS_PACKAGE
from payplane.adapters.postgres_migrations import migrate
from payplane.devinfra.local_identity import spawn_identity
from payplane_contracts.identity import WorkloadRole
from payplane_contracts.topics import RailTopics
from tests import processes
from tests.integration.test_spire import Registrar, Spire, Workload
from tests.processes import stop_processes

PARTITIONS = 2
LISTEN_TIMEOUT_S = 60.0
TOPIC_DELETE_TIMEOUT_S = 30.0


def dsn_for(base_dsn: str, database: str) -> str:
    return base_dsn.rsplit("/", 1)[0] + "/" + database


@dataclass
class Procs:
    """Payplane processes a test started. Their logs (stderr) go to files, never to a pipe nobody reads
    (a full pipe would block a process that logs a lot, e.g. through an outage); ``logs`` reads them."""

    running: list[subprocess.Popen[str]] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="payplane-procs-")))
    log_paths: dict[int, Path] = field(default_factory=dict)

    def spawn(self, argv: list[str], env: dict[str, str], gid: int | None = None) -> subprocess.Popen[str]:
        identity: dict[str, Any] = dict(spawn_identity(gid)) if gid is not None else {}
        log_path = self.log_dir / f"{argv[0]}-{len(self.running)}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "payplane", *argv],
                env={**os.environ, **env},
                text=True,
                stdout=subprocess.PIPE,
                stderr=log_file,
                **identity,
            )
        self.running.append(proc)
        self.log_paths[proc.pid] = log_path
        return proc

    def logs(self, proc: subprocess.Popen[str], tail_chars: int = 4000) -> str:
        path = self.log_paths.get(proc.pid)
        return path.read_text(errors="replace")[-tail_chars:] if path and path.exists() else ""

    def stop_all(self) -> None:
        stop_processes(self.running, grace_s=15)


@dataclass
class Client:
    id: str
    key: str


@dataclass
class RailStack:
    """What a rail's processes need; ``spawn_*`` start them (each returns the process and its port)."""

    name: str
    topics: RailTopics
    bootstrap: str
    payments_dsn: str
    ledger_dsn: str
    redis_url: str
    clients: list[Client]
    spire: Spire
    registrar: Registrar
    worker: Workload
    gateway: Workload
    stranger: Workload
    procs: Procs
    worker_env: dict[str, str] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)
    gateway_grpc_port: int = 0  # the public gRPC edge of the last gateway spawned

    def _common(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "PAYPLANE_RAIL": self.name,
            "SPIFFE_ENDPOINT_SOCKET": self.spire.endpoint_socket,
        }

    def spawn_writer(self, **env: str) -> subprocess.Popen[str]:
        return self.procs.spawn(
            ["ledger-writer"],
            {
                **self._common(),
                "PAYPLANE_LEDGER_DSN": self.ledger_dsn,
                "PAYPLANE_LEDGER_PARTITIONS": f"0-{PARTITIONS - 1}",
                "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
                **env,
            },
        )

    def spawn_worker(self, **env: str) -> tuple[subprocess.Popen[str], int]:
        proc = self.procs.spawn(
            ["payment-worker"],
            {
                **self._common(),
                "PAYPLANE_PAYMENTS_DSN": self.payments_dsn,
                "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
                "PAYPLANE_ALLOWED_CALLERS": self.gateway.spiffe_id,
                "PAYPLANE_REDIS_URL": self.redis_url,
                "PAYPLANE_LEDGER_DSNS": self.ledger_dsn,
                "PAYPLANE_REVIEW_AT_MINOR": "0",
                **self.worker_env,
                **env,
            },
            gid=self.worker.gid,
        )
        return proc, self._listening(proc, "payment worker")

    def spawn_settler(self, **env: str) -> subprocess.Popen[str]:
        """``payplane payment-settler``, for workers spawned with ``PAYPLANE_SETTLEMENT=separate`` (as the
        operator's pods run them). It needs no SPIFFE identity."""
        return self.procs.spawn(
            ["payment-settler"],
            {
                "KAFKA_BOOTSTRAP": self.bootstrap,
                "PAYPLANE_RAIL": self.name,
                "PAYPLANE_PAYMENTS_DSN": self.payments_dsn,
                "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
                **env,
            },
        )

    def spawn_gateway(self, worker_port: int, **env: str) -> tuple[subprocess.Popen[str], int]:
        proc = self.procs.spawn(
            ["gateway"],
            {
                **self._common(),
                "PAYPLANE_PAYMENTS_DSN": self.payments_dsn,
                "PAYPLANE_WORKER_TARGETS": f"localhost:{worker_port}",
                "PAYPLANE_REDIS_URL": self.redis_url,
                "PAYPLANE_RATE_PER_S": "2000",
                "PAYPLANE_RATE_BURST": "2000",
                **self.gateway_env,
                **env,
            },
            gid=self.gateway.gid,
        )
        http_port = self._listening(proc, "gateway")
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed right after the HTTP line
        assert line.startswith("GRPC_LISTENING "), f"the gateway printed {line!r}, not its gRPC port"
        self.gateway_grpc_port = int(line.split()[1])
        return proc, http_port

    def _listening(self, proc: subprocess.Popen[str], what: str) -> int:
        try:
            return processes.listening_port(proc, what, LISTEN_TIMEOUT_S)
        except pytest.fail.Exception:
            pytest.fail(f"{what} did not start listening within {LISTEN_TIMEOUT_S:.0f} s:\n{self.procs.logs(proc)}")


async def _admin_execute(base: str, statements: list[str]) -> None:
    admin = await asyncpg.connect(base)
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def rail_stack(
    *,
    spire: Spire,
    procs: Procs,
    postgres_dsn: str,
    bootstrap: str,
    redis_url: str,
    svid_ttl_s: int | None = None,
    prefix: str = "pay",
) -> AsyncIterator[RailStack]:
    """Databases, topics, SPIRE entries and two API clients for a fresh rail; no process started yet.

    Everything is removed afterwards, after the processes the stack's ``procs`` started are stopped."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    topics = RailTopics(name)
    databases = [f"payments_{name.replace('-', '_')}", f"ledger_{name.replace('-', '_')}"]
    await _admin_execute(postgres_dsn, [f'create database "{d}"' for d in databases])
    payments_dsn, ledger_dsn = (dsn_for(postgres_dsn, d) for d in databases)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    topic_names = [*topics.all_primary(), topics.dead_letters("ledger-writer"), topics.dead_letters("payment-worker")]
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topic_names])
    registrar = Registrar(spire)
    try:
        worker = registrar.register(
            WorkloadRole.PAYMENT_WORKER, name, dns_names=["localhost"], x509_svid_ttl_s=svid_ttl_s
        )
        gateway = registrar.register(WorkloadRole.GATEWAY, name, x509_svid_ttl_s=svid_ttl_s)
        stranger = registrar.register(WorkloadRole.LEDGER_WRITER, name)
        conn = await asyncpg.connect(payments_dsn)
        try:
            await migrate(conn, MIGRATIONS_PACKAGE)
            clients = []
            for client_name in ("merchant-a", "merchant-b"):
                created, key = await api_clients.create(conn, client_name, "client")
                clients.append(Client(created.id, key))
        finally:
            await conn.close()
        yield RailStack(
            name=name,
            topics=topics,
            bootstrap=bootstrap,
            payments_dsn=payments_dsn,
            ledger_dsn=ledger_dsn,
            redis_url=redis_url,
            clients=clients,
            spire=spire,
            registrar=registrar,
            worker=worker,
            gateway=gateway,
            stranger=stranger,
            procs=procs,
        )
    finally:
        procs.stop_all()
        registrar.delete_all()
        try:
            # a broker a fault test left down cannot delete anything; never hide the test's own failure
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(admin.delete_topics(topic_names), TOPIC_DELETE_TIMEOUT_S)
        finally:
            await admin.close()
            await _admin_execute(postgres_dsn, [f'drop database if exists "{d}" with (force)' for d in databases])


async def ledger_accounts_opened(ledger_dsn: str, account_ids: list[str], timeout_s: float) -> None:
    """Bounded wait until the ledger has opened these accounts (their commands travel through Kafka)."""
    conn = await asyncpg.connect(ledger_dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await conn.fetchval("select count(*) from accounts where id = any($1::text[])", account_ids)
            if found == len(account_ids):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    pytest.fail(f"the ledger did not open {account_ids} within {timeout_s} s")
