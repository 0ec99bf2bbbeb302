"""A fresh, migrated ledger shard database per test, on the real local PostgreSQL."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE
from payplane.adapters.outbox_relay import unpack_messages
from payplane.adapters.postgres_migrations import migrate
from payplane_contracts.ledger_messages import TransferOutcome, decode_outcome
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra, kafka_topics

WRITER_ROLE = "ledger-writer"  # names the writers' dead-letter topic


def _dsn_for(base_dsn: str, database: str) -> str:
    return base_dsn.rsplit("/", 1)[0] + "/" + database


@pytest.fixture
async def rail(infra: Infra, request: pytest.FixtureRequest) -> AsyncIterator[RailTopics]:
    """A fresh rail's ledger commands, results and writer dead-letter topics on the real Kafka, with the
    test module's ``RAIL_PARTITIONS`` partitions each (default 1); deleted afterwards."""
    topics = RailTopics(f"ledger-{uuid.uuid4().hex[:8]}")
    names = [topics.ledger_commands, topics.ledger_results, topics.dead_letters(WRITER_ROLE)]
    async with kafka_topics(infra["KAFKA_BOOTSTRAP"], names, getattr(request.module, "RAIL_PARTITIONS", 1)):
        yield topics


@pytest.fixture
async def shard_dsn(infra: Infra) -> AsyncIterator[str]:
    base = infra["PAYPLANE_POSTGRES_DSN"]
    name = f"ledger_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'create database "{name}"')
    dsn = _dsn_for(base, name)
    try:
        yield dsn
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture
async def shard(shard_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(shard_dsn)
    await migrate(conn, MIGRATIONS_PACKAGE)
    try:
        yield conn
    finally:
        await conn.close()


async def produce_commands(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    """Put ``values`` on one partition of the commands topic, in order, acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def outcomes_in_outbox(conn: asyncpg.Connection, topic: str | None = None) -> list[TransferOutcome]:
    """The outcome messages a shard's outbox holds, in order (a batch's outcomes share one packed row)."""
    rows = await conn.fetch(
        "select payload, packed from outbox where $1::text is null or topic = $1 order by id", topic
    )
    payloads = [v for r in rows for _, v in (unpack_messages(r["payload"]) if r["packed"] else [(None, r["payload"])])]
    return [decode_outcome(p) for p in payloads]
