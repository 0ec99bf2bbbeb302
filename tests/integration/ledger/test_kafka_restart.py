"""The writer across a Kafka restart: while the broker is down it keeps running (and retrying), and when
the broker returns it consumes the rest from the positions in its database, skipping nothing.

Restarts the shared local Kafka, so it waits for the broker to be healthy again before finishing."""

import asyncio
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.devinfra.components.kafka import Kafka
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra

ROUNDS_MAX = 600


def _transfer(i: int) -> bytes:
    request = TransferRequest(f"t{i}", TransferMode.POSTED, "world", "acct", 1, "EUR")
    return encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(request)))


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def test_writer_survives_a_kafka_restart(infra: Infra, shard: asyncpg.Connection, shard_dsn: str) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    rail = RailTopics(f"krs-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(rail.ledger_commands, 1, 1), NewTopic(rail.dead_letters("ledger-writer"), 1, 1)]
    )
    await admin.close()
    accounts = [
        encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(spec)))
        for spec in (AccountSpec("world", "EUR", "rail", AccountFlags(internal=True)), AccountSpec("acct", "EUR", "o"))
    ]
    await _produce(bootstrap, rail.ledger_commands, [*accounts, *(_transfer(i) for i in range(300))])

    log = KafkaCommandLog(bootstrap, rail, "ledger-writer", [0])
    await log.start()
    writer = LedgerWriter(
        topic=rail.ledger_commands,
        partitions=[0],
        writer_id="w",
        log_=log,
        store=PostgresLedgerStore(shard_dsn, rail),
        partition_of=partition_lookup(1),
    )
    kafka = Kafka(infra.settings)
    try:
        await writer.start()
        for _ in range(ROUNDS_MAX):
            if writer.applied_records >= 302:
                break
            await writer.run_once()
        kafka.down()
        for _ in range(10):  # the broker is gone: the writer keeps going and applies nothing
            assert await asyncio.wait_for(writer.run_once(), timeout=60) == 0
        await asyncio.to_thread(kafka.up)
        await _produce(bootstrap, rail.ledger_commands, [_transfer(i) for i in range(300, 600)])
        for _ in range(ROUNDS_MAX):
            if writer.applied_records >= 602:
                break
            await asyncio.wait_for(writer.run_once(), timeout=60)
    finally:
        await log.stop()
        if not kafka.healthy():
            await asyncio.to_thread(kafka.up)
    assert writer.applied_records == 602
    assert await shard.fetchval("select count(*) from transfers") == 600
    assert await shard.fetchval("select credits_posted_minor from accounts where id = 'acct'") == 600
    assert await shard.fetchval("select next_offset from consumed_offsets") == 602
