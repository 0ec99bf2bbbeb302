"""The outbox-age gauge on a real relay: it grows while Kafka cannot be reached and drops to zero once
the waiting rows are published (with their trace context as the ``traceparent`` header)."""

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.platform.metrics import OutboxAge
from tests.integration.conftest import Infra, kafka_topics

WAITED_S = 5.0  # the row was written this long before the relay starts
TIMEOUT_S = 30.0
TRACEPARENT = f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-01"


@pytest.fixture
async def topic(infra: Infra) -> AsyncIterator[str]:
    name = f"outbox-age-{uuid.uuid4().hex[:8]}"
    async with kafka_topics(infra["KAFKA_BOOTSTRAP"], [name]):
        yield name


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {TIMEOUT_S} s"
        await asyncio.sleep(0.05)


async def test_outbox_age_grows_without_kafka_and_drops_once_published(
    infra: Infra, payments_dsn: str, topic: str
) -> None:
    registry = CollectorRegistry()
    age = OutboxAge(registry, "payments")

    def gauge() -> float:
        value = registry.get_sample_value("payplane_outbox_age_seconds", {"outbox": "payments"})
        assert value is not None
        return value

    conn = await asyncpg.connect(payments_dsn)
    try:
        await conn.execute(
            "insert into outbox (topic, message_key, payload, traceparent, created_at)"
            " values ($1, 'k', 'waiting', $2, clock_timestamp() - make_interval(secs => $3))",
            topic,
            TRACEPARENT,
            WAITED_S,
        )
        assert gauge() == 0.0

        unreachable = OutboxRelay(
            payments_dsn, f"127.0.0.1:{_closed_port()}", kind=OutboxKind.PAYMENTS, source="age-test", observer=age
        )
        task = asyncio.create_task(unreachable.run())
        try:
            await _until(lambda: gauge() >= WAITED_S, "the relay reported the waiting row")
            first = gauge()
            await asyncio.sleep(1.0)
            assert gauge() >= first + 0.9, "the age must keep growing while nothing can be published"
        finally:
            unreachable.stop()
            await asyncio.wait_for(task, timeout=15)
        assert await conn.fetchval("select count(*) from outbox") == 1

        relay = OutboxRelay(
            payments_dsn, infra["KAFKA_BOOTSTRAP"], kind=OutboxKind.PAYMENTS, source="age-test", observer=age
        )
        task = asyncio.create_task(relay.run())
        try:
            await _until(lambda: gauge() == 0.0, "the age dropped to zero once published")
        finally:
            relay.stop()
            await asyncio.wait_for(task, timeout=15)
        assert await conn.fetchval("select count(*) from outbox") == 0
    finally:
        await conn.close()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=infra["KAFKA_BOOTSTRAP"], auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=TIMEOUT_S)
    finally:
        await consumer.stop()
    assert record.value == b"waiting"
    assert dict(record.headers)["traceparent"] == TRACEPARENT.encode()
