"""``payplane ledger verify`` on real data: passes on a healthy ledger, names each kind of corruption."""

import asyncio
import json
import sys

import asyncpg
import pytest

from payplane.adapters.ledger_store import BatchOutcome, persist
from payplane.adapters.ledger_verify import verify
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest

CUSTOMER = AccountFlags(debits_must_not_exceed_credits=True)


async def _healthy_ledger(conn: asyncpg.Connection) -> None:
    await conn.execute("insert into ledger_partitions (partition, writer_epoch) values (0, 1)")
    ledger = Ledger()
    outcome = BatchOutcome(partition=0, epoch=1, now_us=1)
    for spec in [
        AccountSpec("world", "EUR", "rail"),
        AccountSpec("a", "EUR", "a", CUSTOMER),
        AccountSpec("b", "EUR", "b", CUSTOMER),
    ]:
        ledger.create_account(spec, 0)
        outcome.new_accounts.append(ledger.accounts[spec.id])
    for request in [
        TransferRequest("fund", TransferMode.POSTED, "world", "a", 1000, "EUR"),
        TransferRequest("hold-1", TransferMode.PENDING, "a", "b", 300, "EUR"),
        TransferRequest("hold-2", TransferMode.PENDING, "a", "b", 100, "EUR"),
        TransferRequest("post-1", TransferMode.POST_PENDING, pending_id="hold-1", amount_minor=200),
    ]:
        outcome.changes.append(ledger.apply(request, 1)[1])
    await persist(conn, outcome, ledger)


async def test_a_healthy_ledger_passes(shard: asyncpg.Connection) -> None:
    await _healthy_ledger(shard)
    report = await verify(shard)
    assert report.passed, report.render()
    assert len(report.checks) == 6


@pytest.mark.parametrize(
    ("corruption", "failing_check"),
    [
        ("update accounts set credits_posted_minor = credits_posted_minor + 5 where id = 'b'", "double_entry"),
        (
            "update transfers set amount_minor = 999 where id = 'fund'",
            "balances_match_entries",
        ),
        ("update transfers set pending_state = 'pending' where id = 'hold-1'", "pending_resolved_at_most_once"),
        ("update accounts set debits_pending_minor = 0, credits_pending_minor = 0", "pending_balances_match_holds"),
        (
            "update transfers set credit_account_id = 'ghost' where id = 'fund'",
            "entries_reference_known_rows",
        ),
    ],
)
async def test_each_corruption_is_named(shard: asyncpg.Connection, corruption: str, failing_check: str) -> None:
    await _healthy_ledger(shard)
    await shard.execute(corruption)
    report = await verify(shard)
    failed = [c.name for c in report.checks if not c.passed]
    assert failing_check in failed, report.render()
    assert "LEDGER INVARIANTS VIOLATED" in report.render()


async def test_limit_violation_is_reported_when_constraints_were_bypassed(shard: asyncpg.Connection) -> None:
    await _healthy_ledger(shard)
    await shard.execute("alter table accounts drop constraint accounts_check1")
    await shard.execute("update accounts set debits_posted_minor = 5000 where id = 'a'")
    report = await verify(shard)
    assert "limits_respected" in [c.name for c in report.checks if not c.passed]


async def _run_cli(dsn: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payplane.cli",
        "ledger",
        "verify",
        "--dsn",
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_cli_exit_codes(shard: asyncpg.Connection, shard_dsn: str) -> None:
    await _healthy_ledger(shard)
    code, stdout, stderr = await _run_cli(shard_dsn)
    assert code == 0, stderr
    assert "ledger invariants hold" in stdout
    await shard.execute("update accounts set credits_posted_minor = credits_posted_minor + 5 where id = 'b'")
    code, stdout, _ = await _run_cli(shard_dsn)
    assert code == 2
    assert "FAIL double_entry" in stdout


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payplane",
        "ledger",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_read_commands(shard: asyncpg.Connection, shard_dsn: str) -> None:
    await _healthy_ledger(shard)
    code, out, _ = await _run("balance", "a", "--dsn", shard_dsn)
    assert code == 0
    assert json.loads(out) == {
        "account_id": "a",
        "currency": "EUR",
        "posted_balance_minor": 800,
        "pending_debits_minor": 100,
        "pending_credits_minor": 0,
        "available_minor": 700,
    }
    code, out, _ = await _run("transfer", "post-1", "--dsn", shard_dsn)
    assert code == 0
    assert sorted((e["account_id"], e["side"], e["amount_minor"]) for e in json.loads(out)["entries"]) == [
        ("a", "debit", 200),
        ("b", "credit", 200),
    ]
    code, out, _ = await _run("account", "b", "--dsn", shard_dsn)
    assert json.loads(out)["credits_posted_minor"] == 200
    code, _, err = await _run("transfer", "nope", "--dsn", shard_dsn)
    assert code == 4
    assert "not found" in err
