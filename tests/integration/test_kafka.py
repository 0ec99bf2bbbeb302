"""Real Kafka (KRaft) through aiokafka: admin, keyed produce, group consume, committed-offset resume."""

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.conftest import Infra

PARTITIONS = 3
RECORDS = 30
WAIT_MS = 20_000


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` records as member of ``group``, commit, stop. Returns (partition, value) pairs."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[tuple[int, bytes]] = []
    try:
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=WAIT_MS, max_records=count - len(got))
            if not batches:
                pytest.fail(f"no records within {WAIT_MS} ms; got {len(got)} of {count}")
            for tp, records in batches.items():
                got.extend((tp.partition, r.value) for r in records if r.value is not None)
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def test_topic_keyed_produce_group_consume_and_resume(infra: Infra) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    group = f"smoke-group-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == PARTITIONS

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            partition_by_key: dict[bytes, int] = {}
            for i in range(RECORDS):
                key = f"account-{i % 5}".encode()
                meta = await producer.send_and_wait(topic, value=f"r{i}".encode(), key=key)
                # the same key always lands on the same partition
                assert partition_by_key.setdefault(key, meta.partition) == meta.partition
        finally:
            await producer.stop()
        assert len(set(partition_by_key.values())) > 1, "keys should spread over partitions"

        first = await _consume(bootstrap, topic, group, RECORDS // 2)
        rest = await _consume(bootstrap, topic, group, RECORDS - len(first))
        values = sorted(v for _, v in first + rest)
        assert values == sorted(f"r{i}".encode() for i in range(RECORDS)), "lost or duplicated records"

        committed = await _committed_total(bootstrap, topic, group)
        assert committed == RECORDS
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def _committed_total(bootstrap: str, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for partition in range(PARTITIONS):
            offset = await consumer.committed(TopicPartition(topic, partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()
