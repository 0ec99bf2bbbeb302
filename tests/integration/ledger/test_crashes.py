"""Crash tests: a real ledger writer process is SIGKILLed before its commit, right after it, and at
random moments, then restarted, until every command is consumed. Afterwards the ledger equals a pure
engine run of the same commands, every command has exactly one outcome, and `ledger verify` passes."""

import asyncio
import contextlib
import os
import random
import signal
import sys

import asyncpg
import pytest

from payplane.adapters.ledger_verify import verify
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import outcomes_in_outbox, produce_commands

TRANSFERS = 3000
ACCOUNTS = [AccountSpec("world", "EUR", "rail", AccountFlags(internal=True))] + [
    AccountSpec(f"acct-{i}", "EUR", f"owner-{i}", AccountFlags(debits_must_not_exceed_credits=True)) for i in range(40)
]
RUN_TIMEOUT_S = 60


def _commands(seed: int = 11) -> tuple[list[bytes], list[TransferRequest]]:
    rng = random.Random(seed)
    names = [a.id for a in ACCOUNTS[1:]]
    requests = [TransferRequest(f"fund-{n}", TransferMode.POSTED, "world", n, 5_000, "EUR") for n in names]
    for i in range(TRANSFERS):
        debit, credit = rng.sample(names, 2)
        requests.append(TransferRequest(f"t-{i}", TransferMode.POSTED, debit, credit, rng.randint(1, 900), "EUR"))
    values = [encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(a))) for a in ACCOUNTS]
    values += [encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(r))) for r in requests]
    return values, requests


async def _consumed(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("select to_regclass('consumed_offsets') is not null"):
            return 0
        return int(await conn.fetchval("select coalesce(max(next_offset), 0) from consumed_offsets"))
    finally:
        await conn.close()


async def _start_writer(infra: Infra, rail: RailTopics, dsn: str, crash_at: str | None) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PAYPLANE_LEDGER_DSN": dsn,
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_RAIL": rail.rail,
        "PAYPLANE_LEDGER_PARTITIONS": "0",
        "PAYPLANE_LEDGER_PARTITION_COUNT": "1",
        "PAYPLANE_LEDGER_BATCH_RECORDS_MAX": "100",
    }
    env.pop("PAYPLANE_CRASH_AT", None)
    if crash_at:
        env["PAYPLANE_CRASH_AT"] = crash_at
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payplane",
        "ledger-writer",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have just died at its crash point
        proc.send_signal(sig)


async def _run_until(proc: asyncio.subprocess.Process, dsn: str, total: int, kill_after_s: float | None) -> None:
    """Wait for the process to die on its own (crash point), be killed after ``kill_after_s``, or finish."""
    deadline = asyncio.get_running_loop().time() + RUN_TIMEOUT_S
    started = asyncio.get_running_loop().time()
    while proc.returncode is None:
        now = asyncio.get_running_loop().time()
        if kill_after_s is not None and now - started > kill_after_s:
            _signal(proc, signal.SIGKILL)
            break
        if kill_after_s is None and await _consumed(dsn) >= total:
            _signal(proc, signal.SIGTERM)
            break
        if now > deadline:
            _signal(proc, signal.SIGKILL)
            await proc.wait()
            pytest.fail(f"writer made no progress within {RUN_TIMEOUT_S} s")
        await asyncio.sleep(0.05)
    await asyncio.wait_for(proc.wait(), timeout=30)


async def test_sigkill_anywhere_loses_nothing_and_applies_nothing_twice(
    infra: Infra, rail: RailTopics, shard_dsn: str
) -> None:
    values, requests = _commands()
    await produce_commands(infra["KAFKA_BOOTSTRAP"], rail.ledger_commands, values)

    rng = random.Random(5)
    crash_plan: list[tuple[str | None, float | None]] = [
        ("ledger.before_commit:2", None),  # killed inside the transaction: nothing of that batch lands
        ("ledger.after_commit:1", None),  # killed right after COMMIT, before anything else
        ("ledger.after_commit:3", None),
        *[(None, rng.uniform(0.3, 1.5)) for _ in range(4)],  # killed at random moments
        (None, None),  # finally run to the end
    ]
    for crash_at, kill_after_s in crash_plan:
        proc = await _start_writer(infra, rail, shard_dsn, crash_at)
        await _run_until(proc, shard_dsn, len(values), kill_after_s)
        if crash_at:
            assert proc.returncode == -signal.SIGKILL, f"crash point {crash_at} was not reached"
    assert await _consumed(shard_dsn) == len(values)

    reference = Ledger()
    for spec in ACCOUNTS:
        reference.create_account(spec, 0)
    expected_results = {r.id: reference.apply(r, 1)[0].value for r in requests}

    conn = await asyncpg.connect(shard_dsn)
    try:
        report = await verify(conn)
        assert report.passed, report.render()
        outcomes = await outcomes_in_outbox(conn)
        assert len(outcomes) == len(requests), "every command must have exactly one outcome"
        assert {o.transfer_id: o.result for o in outcomes} == expected_results
        balances = {
            r["id"]: (r["d"], r["c"])
            for r in await conn.fetch("select id, debits_posted_minor d, credits_posted_minor c from accounts")
        }
    finally:
        await conn.close()
    assert balances == {a.id: (a.debits_posted_minor, a.credits_posted_minor) for a in reference.accounts.values()}
