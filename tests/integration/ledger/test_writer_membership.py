"""Several writer processes on one shard share its partitions through their heartbeats in the shard
database: two writers split four partitions; when one is killed with SIGKILL the other takes its
partitions once the lease expires; a third joining takes a share. Under cross-partition traffic the
whole time, every transfer is decided exactly once and `ledger verify` passes."""

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from payplane.adapters.ledger_verify import verify_shards
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.test_concurrent_writers import PARTITIONS, _commands, _decided

RAIL_PARTITIONS = PARTITIONS
LEASE_S = 2.0
OWNERSHIP_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 120.0


async def _writer(env: dict[str, str], writer_id: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payplane",
        "ledger-writer",
        env={**env, "PAYPLANE_WRITER_ID": writer_id},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _owners(shard: asyncpg.Connection) -> Counter[str]:
    return Counter(r["writer_id"] for r in await shard.fetch("select writer_id from ledger_partitions"))


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout_s} s")


async def test_writers_share_partitions_and_take_over_a_killed_one(
    infra: Infra,
    rail: RailTopics,
    shard: asyncpg.Connection,
    shard_dsn: str,
) -> None:
    commands, transfer_ids = _commands()
    env = {
        **os.environ,
        "PAYPLANE_LEDGER_DSN": shard_dsn,
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_RAIL": rail.rail,
        "PAYPLANE_LEDGER_PARTITIONS": f"0-{PARTITIONS - 1}",
        "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
        "PAYPLANE_LEDGER_BATCH_RECORDS_MAX": "50",
        "PAYPLANE_WRITER_HEARTBEAT_S": "0.2",
        "PAYPLANE_WRITER_LEASE_S": str(LEASE_S),
    }
    env.pop("PAYPLANE_CRASH_AT", None)
    writers = {name: await _writer(env, name) for name in ("writer-a", "writer-b")}

    async def split_evenly() -> bool:
        return sorted((await _owners(shard)).values()) == [2, 2] and set(await _owners(shard)) <= set(writers)

    try:
        await _until(split_evenly, OWNERSHIP_TIMEOUT_S, "two writers owning two partitions each")
        producer = AIOKafkaProducer(bootstrap_servers=infra["KAFKA_BOOTSTRAP"], acks="all", linger_ms=5)
        await producer.start()
        try:
            half = len(commands) // 2
            for partition, value in commands[:half]:
                await producer.send(rail.ledger_commands, value, partition=partition)
            await producer.flush()
            writers["writer-b"].send_signal(signal.SIGKILL)  # mid-traffic: its lease must run out
            await writers["writer-b"].wait()
            for partition, value in commands[half:]:
                await producer.send(rail.ledger_commands, value, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

        async def a_owns_all() -> bool:
            return await _owners(shard) == Counter({"writer-a": PARTITIONS})

        await _until(a_owns_all, LEASE_S + OWNERSHIP_TIMEOUT_S, "writer-a taking writer-b's partitions")
        writers["writer-c"] = await _writer(env, "writer-c")
        await _until(split_evenly, OWNERSHIP_TIMEOUT_S, "writer-c joining with a share of two")

        async def all_decided() -> bool:
            decided = await _decided(shard, rail.ledger_results)
            return all(t in decided for t in transfer_ids)

        await _until(all_decided, SETTLE_TIMEOUT_S, "every transfer decided")
    finally:
        for writer in writers.values():
            if writer.returncode is None:
                writer.send_signal(signal.SIGTERM)
        for writer in writers.values():
            await asyncio.wait_for(writer.wait(), timeout=30)
    assert writers["writer-a"].returncode == 0
    assert writers["writer-c"].returncode == 0
    decided = await _decided(shard, rail.ledger_results)
    assert all(len(results) == 1 for results in decided.values()), "a transfer was decided twice, differently"
    applied = await shard.fetchval("select count(*) from transfers where kind not like 'transit%'")
    assert applied == sum(1 for r in decided.values() if r == {"ok"}), "a transfer applied twice or lost"
    # writers stopped with SIGTERM left the membership at once; the killed one's row just lapsed
    assert {r["writer_id"] for r in await shard.fetch("select writer_id from ledger_writers")} == {"writer-b"}
    report = await verify_shards([shard], time.time_ns() // 1000)
    assert report.passed, report.render()
