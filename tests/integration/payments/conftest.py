"""A whole rail's payment path on the real local infrastructure, once per module: a ledger writer, a
payment worker and a gateway as separate processes, the worker and the gateway each with its own SPIFFE
identity (primary gid, see ``payplane.devinfra.local_identity``), talking SPIFFE mTLS gRPC.

Databases, Kafka topics and SPIRE entries are unique to the run and removed afterwards.
"""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from payplane.adapters import api_clients
from payplane.adapters.payments_store import MIGRATIONS_PACKAGE
from payplane.adapters.postgres_migrations import migrate
from payplane.devinfra.local_identity import spawn_identity
from payplane.devinfra.spire_cli import SpireServerCli
from payplane_contracts.identity import WorkloadRole
from payplane_contracts.topics import RailTopics
from tests import processes
from tests.integration.conftest import Infra
from tests.integration.test_spire import Registrar, Spire, Workload, _delete_leftover_test_entries
from tests.processes import stop_processes

PARTITIONS = 2
LISTEN_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 30.0


def dsn_for(base_dsn: str, database: str) -> str:
    return base_dsn.rsplit("/", 1)[0] + "/" + database


@dataclass
class Procs:
    running: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, argv: list[str], env: dict[str, str], gid: int | None = None) -> subprocess.Popen[str]:
        identity: dict[str, Any] = dict(spawn_identity(gid)) if gid is not None else {}
        proc = subprocess.Popen(
            [sys.executable, "-m", "payplane", *argv],
            env={**os.environ, **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **identity,
        )
        self.running.append(proc)
        return proc

    def stop_all(self) -> None:
        stop_processes(self.running, grace_s=15)


def listening_port(proc: subprocess.Popen[str], what: str, timeout_s: float = LISTEN_TIMEOUT_S) -> int:
    return processes.listening_port(proc, what, timeout_s)


@dataclass
class Client:
    id: str
    key: str


@dataclass
class Rail:
    name: str
    topics: RailTopics
    base_url: str
    worker_port: int
    payments_dsn: str
    ledger_dsn: str
    clients: list[Client]
    spire: Spire
    registrar: Registrar
    worker: Workload
    gateway: Workload
    stranger: Workload
    redis_url: str

    def headers(self, client: Client, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {client.key}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers


@pytest.fixture(scope="module")
def spire(infra: Infra) -> Spire:
    spire = Spire(
        cli=SpireServerCli(Path(infra["PAYPLANE_SPIRE_SERVER_BIN"]), Path(infra["PAYPLANE_SPIRE_SERVER_SOCKET"])),
        trust_domain=infra["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        node_id=infra["PAYPLANE_SPIRE_NODE_ID"],
        endpoint_socket=infra["SPIFFE_ENDPOINT_SOCKET"],
    )
    _delete_leftover_test_entries(spire)
    return spire


@pytest.fixture(scope="module")
def procs() -> Iterator[Procs]:
    procs = Procs()
    yield procs
    procs.stop_all()


async def _create_databases(base: str, names: list[str]) -> None:
    admin = await asyncpg.connect(base)
    try:
        for name in names:
            await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()


async def _drop_databases(base: str, names: list[str]) -> None:
    admin = await asyncpg.connect(base)
    try:
        for name in names:
            await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def rail(infra: Infra, spire: Spire, procs: Procs) -> AsyncIterator[Rail]:
    name = f"pay-{uuid.uuid4().hex[:8]}"
    topics = RailTopics(name)
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    base = infra["PAYPLANE_POSTGRES_DSN"]
    databases = [f"payments_{name.replace('-', '_')}", f"ledger_{name.replace('-', '_')}"]
    await _create_databases(base, databases)
    payments_dsn, ledger_dsn = (dsn_for(base, d) for d in databases)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    topic_names = [*topics.all_primary(), topics.dead_letters("ledger-writer"), topics.dead_letters("payment-worker")]
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topic_names])
    registrar = Registrar(spire)
    try:
        worker = registrar.register(WorkloadRole.PAYMENT_WORKER, name, dns_names=["localhost"])
        gateway = registrar.register(WorkloadRole.GATEWAY, name)
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
        common = {"KAFKA_BOOTSTRAP": bootstrap, "PAYPLANE_RAIL": name, "SPIFFE_ENDPOINT_SOCKET": spire.endpoint_socket}
        procs.spawn(
            ["ledger-writer"],
            {
                **common,
                "PAYPLANE_LEDGER_DSN": ledger_dsn,
                "PAYPLANE_LEDGER_PARTITIONS": f"0-{PARTITIONS - 1}",
                "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
            },
        )
        worker_proc = procs.spawn(
            ["payment-worker"],
            {
                **common,
                "PAYPLANE_PAYMENTS_DSN": payments_dsn,
                "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
                "PAYPLANE_ALLOWED_CALLERS": gateway.spiffe_id,
                "PAYPLANE_REDIS_URL": infra["PAYPLANE_REDIS_URL"],
                "PAYPLANE_LEDGER_DSNS": ledger_dsn,
                "PAYPLANE_REVIEW_AT_MINOR": "0",
            },
            gid=worker.gid,
        )
        worker_port = listening_port(worker_proc, "payment worker")
        gateway_proc = procs.spawn(
            ["gateway"],
            {
                **common,
                "PAYPLANE_PAYMENTS_DSN": payments_dsn,
                "PAYPLANE_WORKER_TARGETS": f"localhost:{worker_port}",
                "PAYPLANE_REDIS_URL": infra["PAYPLANE_REDIS_URL"],
                "PAYPLANE_RATE_PER_S": "2000",
                "PAYPLANE_RATE_BURST": "2000",
            },
            gid=gateway.gid,
        )
        gateway_port = listening_port(gateway_proc, "gateway")
        yield Rail(
            name=name,
            topics=topics,
            base_url=f"http://127.0.0.1:{gateway_port}",
            worker_port=worker_port,
            payments_dsn=payments_dsn,
            ledger_dsn=ledger_dsn,
            clients=clients,
            spire=spire,
            registrar=registrar,
            worker=worker,
            gateway=gateway,
            stranger=stranger,
            redis_url=infra["PAYPLANE_REDIS_URL"],
        )
    finally:
        procs.stop_all()
        registrar.delete_all()
        await admin.delete_topics(topic_names)
        await admin.close()
        await _drop_databases(base, databases)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def wait_ledger_accounts(rail: Rail, account_ids: list[str], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Bounded wait until the ledger has opened these accounts (their commands travel through Kafka)."""
    conn = await asyncpg.connect(rail.ledger_dsn)
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
