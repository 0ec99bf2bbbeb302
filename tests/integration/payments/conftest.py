"""A whole rail's payment path on the real local infrastructure, once per module: a ledger writer, a
payment worker and a gateway as separate processes, the worker and the gateway each with its own SPIFFE
identity (primary gid, see ``payplane.devinfra.local_identity``), talking SPIFFE mTLS gRPC.

Databases, Kafka topics and SPIRE entries are unique to the run and removed afterwards
(``rail_stack.py`` builds them; fault tests use it directly to restart or re-route single processes).
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from payplane.adapters.payments_store import MIGRATIONS_PACKAGE
from payplane.adapters.postgres_migrations import migrate
from payplane.devinfra.spire_cli import SpireServerCli
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.payments.rail_stack import Client, Procs, dsn_for, ledger_accounts_opened, rail_stack
from tests.integration.test_spire import Registrar, Spire, Workload, _delete_leftover_test_entries

SETTLE_TIMEOUT_S = 30.0

__all__ = ["Client", "Procs", "Rail"]


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
    grpc_target: str  # the gateway's public gRPC edge

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


@pytest.fixture(scope="module")
async def rail(infra: Infra, spire: Spire, procs: Procs) -> AsyncIterator[Rail]:
    async with rail_stack(
        spire=spire,
        procs=procs,
        postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
        bootstrap=infra["KAFKA_BOOTSTRAP"],
        redis_url=infra["PAYPLANE_REDIS_URL"],
    ) as stack:
        stack.gateway_env["PAYPLANE_LOG_LEVEL"] = "debug"  # its line per payment (test_trace_context)
        stack.spawn_writer()
        _, worker_port = stack.spawn_worker()
        _, gateway_port = stack.spawn_gateway(worker_port)
        yield Rail(
            name=stack.name,
            topics=stack.topics,
            base_url=f"http://127.0.0.1:{gateway_port}",
            worker_port=worker_port,
            payments_dsn=stack.payments_dsn,
            ledger_dsn=stack.ledger_dsn,
            clients=stack.clients,
            spire=spire,
            registrar=stack.registrar,
            worker=stack.worker,
            gateway=stack.gateway,
            stranger=stack.stranger,
            redis_url=stack.redis_url,
            grpc_target=f"127.0.0.1:{stack.gateway_grpc_port}",
        )


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def wait_ledger_accounts(rail: Rail, account_ids: list[str], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Bounded wait until the ledger has opened these accounts (their commands travel through Kafka)."""
    await ledger_accounts_opened(rail.ledger_dsn, account_ids, timeout_s)


@pytest.fixture
async def payments_dsn(infra: Infra) -> AsyncIterator[str]:
    """A fresh, migrated payments database of its own (no processes), dropped afterwards."""
    base = infra["PAYPLANE_POSTGRES_DSN"]
    name = f"payments_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'create database "{name}"')
    dsn = dsn_for(base, name)
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn, MIGRATIONS_PACKAGE)
        await conn.close()
        yield dsn
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
