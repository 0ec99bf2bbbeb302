"""The shard's outbox relayed by a process of its own (`payplane ledger-relay`), as the operator runs it
beside each writer: a writer started with PAYPLANE_LEDGER_RELAY=separate commits outcomes to the outbox
and publishes nothing; the relay publishes every one, with event ids that name the rail and the shard."""

import asyncio
import os
import signal
import sys
import time

import asyncpg
from aiokafka import AIOKafkaConsumer

from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, decode_outcome, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import produce_commands

TRANSFERS = 40
WAIT_S = 60.0


def _commands() -> list[bytes]:
    accounts = [
        AccountSpec("world", "EUR", "rail", AccountFlags(internal=True)),
        AccountSpec("alice", "EUR", "alice", AccountFlags(debits_must_not_exceed_credits=True)),
    ]
    transfers = [
        TransferRequest(f"t-{i}", TransferMode.POSTED, "world", "alice", 100 + i, "EUR") for i in range(TRANSFERS)
    ]
    return [
        *(encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(a))) for a in accounts),
        *(encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(t))) for t in transfers),
    ]


async def _start(command: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payplane", command, env=env, stdout=asyncio.subprocess.DEVNULL
    )


async def _outcome_rows(shard: asyncpg.Connection) -> tuple[int, int]:
    row = await shard.fetchrow(
        "select count(*) as rows, count(*) filter (where published_at is null) as unpublished from outbox"
    )
    assert row is not None
    return row["rows"], row["unpublished"]


async def test_a_separate_relay_publishes_what_the_writer_committed(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    env = {
        **os.environ,
        "PAYPLANE_LEDGER_DSN": shard_dsn,
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_RAIL": rail.rail,
        "PAYPLANE_LEDGER_PARTITIONS": "0",
        "PAYPLANE_LEDGER_PARTITION_COUNT": "1",
        "PAYPLANE_LEDGER_SHARD": "shard-a",
        "PAYPLANE_LEDGER_RELAY": "separate",
    }
    env.pop("PAYPLANE_CRASH_AT", None)
    processes = [await _start("ledger-writer", env)]
    consumer = AIOKafkaConsumer(
        rail.ledger_results, bootstrap_servers=infra["KAFKA_BOOTSTRAP"], auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await produce_commands(infra["KAFKA_BOOTSTRAP"], rail.ledger_commands, _commands())
        deadline = time.monotonic() + WAIT_S
        while (await _outcome_rows(shard))[0] == 0 or await shard.fetchval(
            "select coalesce(sum(next_offset), 0) from consumed_offsets"
        ) < len(_commands()):
            assert time.monotonic() < deadline, "the writer did not commit the commands"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # time enough for an in-process relay to have published
        rows, unpublished = await _outcome_rows(shard)
        assert unpublished == rows, "the writer published although PAYPLANE_LEDGER_RELAY=separate"
        assert not await consumer.getmany(timeout_ms=200)

        processes.append(await _start("ledger-relay", env))
        outcomes: dict[str, bytes] = {}
        while len(outcomes) < TRANSFERS:
            assert time.monotonic() < deadline + WAIT_S, f"the relay published {len(outcomes)} of {TRANSFERS}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    outcome = decode_outcome(record.value or b"")
                    outcomes[outcome.transfer_id] = dict(record.headers)["event_id"]
        assert all(event_id.startswith(f"{rail.rail}/shard-a:".encode()) for event_id in outcomes.values())
        assert len(set(outcomes.values())) == TRANSFERS
        while (await _outcome_rows(shard))[1] != 0:
            assert time.monotonic() < deadline + 2 * WAIT_S, "the relay left rows unpublished"
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), timeout=30) for p in processes]
    assert codes == [0, 0]
