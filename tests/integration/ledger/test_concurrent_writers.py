"""Four ledger writer processes, one per partition, run at the same time on one shard database under
random same- and cross-partition traffic: no deadlock, every transfer decided exactly once, nothing
left in transit, and `ledger verify` passes."""

import asyncio
import os
import random
import signal
import sys
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from payplane.adapters.ledger_verify import verify_shards
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.partitions import ledger_partition_for_account
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import outcomes_in_outbox

RAIL_PARTITIONS = PARTITIONS = 4
CUSTOMERS = 40
TRANSFERS = 1500
SETTLE_TIMEOUT_S = 120


def partition_of(account_id: str) -> int:
    return ledger_partition_for_account(account_id, PARTITIONS)


def _commands() -> tuple[list[tuple[int, bytes]], list[str]]:
    rng = random.Random(23)
    customers = [f"cust-{i}" for i in range(CUSTOMERS)]
    worlds = {p: next(f"world-{i}" for i in range(500) if partition_of(f"world-{i}") == p) for p in range(PARTITIONS)}
    accounts = [AccountSpec(w, "EUR", "rail", AccountFlags(internal=True)) for w in worlds.values()]
    accounts += [AccountSpec(c, "EUR", c, AccountFlags(debits_must_not_exceed_credits=True)) for c in customers]
    out = [
        (partition_of(a.id), encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(a))))
        for a in accounts
    ]
    requests = [
        TransferRequest(f"fund-{c}", TransferMode.POSTED, worlds[partition_of(c)], c, 2_000, "EUR") for c in customers
    ]
    for i in range(TRANSFERS):
        debit, credit = rng.sample(customers, 2)
        requests.append(TransferRequest(f"t-{i}", TransferMode.POSTED, debit, credit, rng.randint(1, 400), "EUR"))
    out += [
        (partition_of(r.debit_account_id), encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(r))))
        for r in requests
    ]
    return out, [r.id for r in requests]


async def _decided(conn: asyncpg.Connection, topic: str) -> dict[str, set[str]]:
    decided: dict[str, set[str]] = {}
    for outcome in await outcomes_in_outbox(conn, topic):
        decided.setdefault(outcome.transfer_id, set()).add(outcome.result)
    return decided


async def test_concurrent_writers_settle_without_deadlock(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    commands, transfer_ids = _commands()
    env = {
        **os.environ,
        "PAYPLANE_LEDGER_DSN": shard_dsn,
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_RAIL": rail.rail,
        "PAYPLANE_LEDGER_PARTITION_COUNT": str(PARTITIONS),
        "PAYPLANE_LEDGER_BATCH_RECORDS_MAX": "200",
    }
    env.pop("PAYPLANE_CRASH_AT", None)
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "payplane",
            "ledger-writer",
            env={**env, "PAYPLANE_LEDGER_PARTITIONS": str(p)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for p in range(PARTITIONS)
    ]
    try:
        producer = AIOKafkaProducer(bootstrap_servers=infra["KAFKA_BOOTSTRAP"], acks="all", linger_ms=5)
        await producer.start()
        try:
            for partition, value in commands:
                await producer.send(rail.ledger_commands, value, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        decided: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            decided = await _decided(shard, rail.ledger_results)
            if all(t in decided for t in transfer_ids):
                break
            assert all(w.returncode is None for w in writers), "a writer process died"
            await asyncio.sleep(0.5)
        else:
            missing = [t for t in transfer_ids if t not in decided]
            pytest.fail(f"{len(missing)} transfers undecided after {SETTLE_TIMEOUT_S} s, e.g. {missing[:5]}")
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.send_signal(signal.SIGTERM)
        for writer in writers:
            await asyncio.wait_for(writer.wait(), timeout=30)
    assert all(w.returncode == 0 for w in writers), [w.returncode for w in writers]
    assert all(len(results) == 1 for results in decided.values()), "a transfer was decided twice, differently"
    results = [next(iter(r)) for r in decided.values()]
    assert set(results) <= {"ok", "insufficient_funds"}, set(results)
    assert results.count("ok") > TRANSFERS // 4, "too few transfers went through"
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert sum(v for k, v in balances.items() if k.startswith("~transit:")) == 0, "money left in transit"
    report = await verify_shards([shard], time.time_ns() // 1000)
    assert report.passed, report.render()
