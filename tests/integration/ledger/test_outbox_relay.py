"""The outbox relay on real PostgreSQL and Kafka: prompt (woken by NOTIFY, not a timer), complete,
at least once, and never twice under normal operation with several relays."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE
from payplane.adapters.outbox_relay import NOTIFY_SQL, OutboxKind, OutboxRelay, pack_messages
from payplane.adapters.postgres_migrations import migrate
from tests.integration.conftest import Infra, kafka_topics
from tests.tcp_proxy import PartitionableProxy

SLOW_POLL_S = 60.0  # far longer than the test: delivery must come from NOTIFY


@pytest.fixture
async def topic(infra: Infra) -> AsyncIterator[str]:
    name = f"outbox-{uuid.uuid4().hex[:8]}"
    async with kafka_topics(infra["KAFKA_BOOTSTRAP"], [name]):
        yield name


async def _enqueue(conn: asyncpg.Connection, topic: str, count: int, start: int = 0) -> None:
    async with conn.transaction():
        await conn.executemany(
            "insert into outbox (partition, topic, message_key, payload) values (0, $1, $2, $3)",
            [(topic, f"k{i}".encode(), f"m{i}".encode()) for i in range(start, start + count)],
        )
        await conn.execute(NOTIFY_SQL)


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float) -> list[tuple[bytes, bytes]]:
    """Every message until ``count`` distinct values arrived (re-sent duplicates included) or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len({value for value, _ in got}) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            got += [(r.value or b"", dict(r.headers)["event_id"]) for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return got


async def test_relay_is_prompt_complete_and_not_doubled(
    infra: Infra, shard: asyncpg.Connection, shard_dsn: str, topic: str
) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    relays = [
        OutboxRelay(shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="shard-test", safety_poll_s=SLOW_POLL_S)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.sleep(1.0)  # both relays connected and listening
        started = time.monotonic()
        await _enqueue(shard, topic, 1)
        first = await _consume(bootstrap, topic, 1, timeout_s=10)
        assert len(first) == 1
        assert time.monotonic() - started < 5, "delivery should follow the commit, not a poll"

        for round_ in range(5):
            await _enqueue(shard, topic, 400, start=1 + round_ * 400)
        messages = await _consume(bootstrap, topic, 2001, timeout_s=30)
    finally:
        for r in relays:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)
    values = sorted(int(v[1:]) for v, _ in messages)
    assert values == list(range(2001)), "lost or duplicated outbox messages"
    assert len({event_id for _, event_id in messages}) == 2001
    assert await shard.fetchval("select count(*) from outbox where published_at is null") == 0
    assert sum(r.published for r in relays) == 2001


async def test_relay_rides_out_a_database_partition(
    infra: Infra, shard: asyncpg.Connection, shard_dsn: str, topic: str
) -> None:
    """Connections to the database are cut mid-stream and refused for a while: every message still
    arrives (at least once; duplicates carry the same event id), and nothing stays unpublished."""
    parts = urlsplit(shard_dsn)
    proxy = PartitionableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    relay = OutboxRelay(
        proxied, infra["KAFKA_BOOTSTRAP"], kind=OutboxKind.LEDGER, source="partitioned", safety_poll_s=0.5
    )
    task = asyncio.create_task(relay.run())
    try:
        for round_ in range(6):
            await _enqueue(shard, topic, 200, start=round_ * 200)
            await asyncio.sleep(0.2)
            if round_ % 2 == 1:
                proxy.cut()
                await asyncio.sleep(0.5)
                proxy.heal()
        messages = await _consume(infra["KAFKA_BOOTSTRAP"], topic, 1200, timeout_s=60)
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
        await proxy.stop()
    assert sorted({int(v[1:]) for v, _ in messages}) == list(range(1200)), "a message was lost"
    by_value: dict[bytes, set[bytes]] = {}
    for value, event_id in messages:
        by_value.setdefault(value, set()).add(event_id)
    assert all(len(ids) == 1 for ids in by_value.values()), "a re-sent message must keep its event id"
    assert await shard.fetchval("select count(*) from outbox where published_at is null") == 0


async def test_relay_keeps_each_keys_order_and_partition(
    infra: Infra, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    """Rows go out in record batches per topic partition: each key keeps its partition (the client's
    default partitioner, as a plain send would choose) and its order, across several full batches."""
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    name = f"outbox-order-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 3, 1)])
    relay = OutboxRelay(shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="order-test", safety_poll_s=SLOW_POLL_S)
    task = asyncio.create_task(relay.run())
    rows = [(name, f"key-{i % 7}".encode(), f"{i:05d}".encode() + b"x" * 600) for i in range(3000)]
    try:
        async with shard.transaction():
            await shard.executemany(
                "insert into outbox (partition, topic, message_key, payload) values (0, $1, $2, $3)", rows
            )
            await shard.execute(NOTIFY_SQL)
        consumer = AIOKafkaConsumer(name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        got: list[tuple[int, bytes, int]] = []
        deadline = time.monotonic() + 30
        try:
            while len(got) < len(rows) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                got += [(r.partition, r.key or b"", int((r.value or b"")[:5])) for rs in batches.values() for r in rs]
        finally:
            await consumer.stop()
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
        await admin.delete_topics([name])
        await admin.close()
    assert sorted(i for _, _, i in got) == list(range(len(rows)))
    partitioner = DefaultPartitioner()
    for key in {k for _, k, _ in got}:
        mine = [(p, i) for p, k, i in got if k == key]
        assert {p for p, _ in mine} == {partitioner(key, [0, 1, 2], [0, 1, 2])}
        assert [i for _, i in mine] == sorted(i for _, i in mine), f"{key!r} out of order"


async def test_a_packed_row_goes_out_as_its_messages(
    infra: Infra, shard: asyncpg.Connection, shard_dsn: str, topic: str
) -> None:
    """A writer packs a batch's outcomes in one row: the relay sends each as its own keyed message, in
    order, with an event id per message, and marks the row once."""
    packed = [(f"t{i}".encode(), f"outcome-{i}".encode()) for i in range(500)]
    async with shard.transaction():
        await shard.execute(
            "insert into outbox (partition, topic, payload, packed) values (0, $1, $2, true)",
            topic,
            pack_messages(packed),
        )
        await shard.execute(
            "insert into outbox (partition, topic, message_key, payload) values (0, $1, 'k', 'single')", topic
        )
        await shard.execute(NOTIFY_SQL)
    relay = OutboxRelay(
        shard_dsn, infra["KAFKA_BOOTSTRAP"], kind=OutboxKind.LEDGER, source="packed", safety_poll_s=SLOW_POLL_S
    )
    task = asyncio.create_task(relay.run())
    try:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=infra["KAFKA_BOOTSTRAP"], auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        got: list[tuple[bytes | None, bytes, bytes]] = []
        deadline = time.monotonic() + 30
        try:
            while len(got) < 501 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                got += [(r.key, r.value or b"", dict(r.headers)["event_id"]) for rs in batches.values() for r in rs]
        finally:
            await consumer.stop()
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
    assert [(k, v) for k, v, _ in got[:500]] == packed
    assert got[500][:2] == (b"k", b"single")
    assert len({event_id for _, _, event_id in got}) == 501
    assert relay.published == 501
    assert await shard.fetchval("select count(*) from outbox where published_at is null") == 0


async def _wait_for(conn: asyncpg.Connection, sql: str, expected: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    value = int(await conn.fetchval(sql))
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = int(await conn.fetchval(sql))
    return value


async def test_a_kept_outbox_loses_only_rows_sent_longer_ago_than_it_keeps_them(
    infra: Infra, shard: asyncpg.Connection, shard_dsn: str, topic: str
) -> None:
    """A shard's outbox keeps what it sent for ``sent_keep_s``, then the relay deletes it, in bounded
    batches, oldest first; rows sent recently and rows not sent yet stay."""
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    relay = OutboxRelay(
        shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="kept", safety_poll_s=SLOW_POLL_S, sent_keep_s=3600
    )
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(1.0)
        await _enqueue(shard, topic, 450)
        unsent = "select count(*) from outbox where published_at is null"
        assert await _wait_for(shard, unsent, 0, timeout_s=30) == 0
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
    assert relay.pruned == 0, "rows sent a moment ago must be kept"
    ids = [r["id"] for r in await shard.fetch("select id from outbox order by id")]
    assert len(ids) == 450

    # the 300 oldest were sent two hours ago, but for one, which the relay has not sent yet (it sends it
    # again now, and keeps it as sent now)
    await shard.execute(
        "update outbox set published_at = now() - interval '2 hours' where id = any($1::bigint[])", ids[:300]
    )
    await shard.execute("update outbox set published_at = null where id = $1", ids[4])
    relay = OutboxRelay(
        shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="kept", safety_poll_s=SLOW_POLL_S, sent_keep_s=3600
    )
    task = asyncio.create_task(relay.run())
    try:
        remaining = await _wait_for(shard, "select count(*) from outbox", 151, timeout_s=30)
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
    assert remaining == 151, f"{remaining} rows left, expected 151"
    kept = [r["id"] for r in await shard.fetch("select id from outbox order by id")]
    assert kept == [ids[4], *ids[300:]]
    assert relay.pruned == 299
    assert await shard.fetchval(unsent) == 0


async def test_a_relay_started_before_its_database_is_migrated_waits_for_the_outbox_of_its_kind(
    infra: Infra, shard_dsn: str, topic: str
) -> None:
    """A shard's relay and writer are two processes of one pod: the relay may look at the database before
    or while the writer migrates it. It must wait until the outbox has what its kind needs, never infer its
    kind from the table it finds (a relay that did once read the columns before a migration committed,
    took the shard's outbox for a payments outbox, and sent a writer batch's packed outcomes as one
    message that no consumer could decode)."""
    conn = await asyncpg.connect(shard_dsn)
    relay = OutboxRelay(
        shard_dsn, infra["KAFKA_BOOTSTRAP"], kind=OutboxKind.LEDGER, source="early", safety_poll_s=SLOW_POLL_S
    )
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # no outbox at all yet
        await migrate(conn, MIGRATIONS_PACKAGE, target_version=5)  # an outbox of a release before packed rows
        await asyncio.sleep(1.0)
        assert not task.done()
        assert relay.published == 0
        await migrate(conn, MIGRATIONS_PACKAGE)
        packed = [(f"t{i}".encode(), f"outcome-{i}".encode()) for i in range(3)]
        async with conn.transaction():
            await conn.execute(
                "insert into outbox (partition, topic, payload, packed) values (0, $1, $2, true)",
                topic,
                pack_messages(packed),
            )
            await conn.execute(NOTIFY_SQL)
        got = await _consume(infra["KAFKA_BOOTSTRAP"], topic, count=3, timeout_s=30)
        assert [value for value, _ in got] == [value for _, value in packed]
        assert await _wait_for(conn, "select count(*) from outbox where published_at is null", 0, timeout_s=10) == 0
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=15)
        await conn.close()
