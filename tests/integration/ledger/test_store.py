"""The ledger store on real PostgreSQL: a batch applied by the engine persists exactly, reloads
identically, and a fenced writer commits nothing."""

import asyncpg
import pytest

from payplane.adapters.ledger_store import BatchOutcome, FencedError, load_ledger, persist
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.results import TransferResult

PARTITION = 0
ACCOUNTS = [
    AccountSpec("world", "EUR", "rail", AccountFlags(internal=True)),
    AccountSpec("alice", "EUR", "alice", AccountFlags(debits_must_not_exceed_credits=True)),
    AccountSpec("bob", "EUR", "bob", AccountFlags(debits_must_not_exceed_credits=True)),
]


async def _claim(conn: asyncpg.Connection, epoch: int) -> None:
    await conn.execute(
        "insert into ledger_partitions (partition, writer_epoch) values ($1, $2)"
        " on conflict (partition) do update set writer_epoch = excluded.writer_epoch",
        PARTITION,
        epoch,
    )


async def _run_batch(
    conn: asyncpg.Connection, requests: list[TransferRequest], epoch: int, now_us: int, offset: int
) -> list[TransferResult]:
    ids = [r.id for r in requests] + [r.pending_id for r in requests if r.pending_id]
    accounts = [a for r in requests for a in (r.debit_account_id, r.credit_account_id) if a]
    ledger = await load_ledger(conn, accounts, ids)
    outcome = BatchOutcome(partition=PARTITION, epoch=epoch, now_us=now_us, offsets={("commands", PARTITION): offset})
    results = []
    for request in requests:
        result, change = ledger.apply(request, now_us)
        results.append(result)
        outcome.changes.append(change)
    await persist(conn, outcome, ledger)
    return results


@pytest.fixture
async def funded(shard: asyncpg.Connection) -> asyncpg.Connection:
    await _claim(shard, epoch=1)
    ledger = Ledger()
    outcome = BatchOutcome(partition=PARTITION, epoch=1, now_us=0)
    for spec in ACCOUNTS:
        ledger.create_account(spec, 0)
        outcome.new_accounts.append(ledger.accounts[spec.id])
    await persist(shard, outcome, ledger)
    await _run_batch(shard, [TransferRequest("fund", TransferMode.POSTED, "world", "alice", 1000, "EUR")], 1, 1, 1)
    return shard


def _t(
    tid: str,
    debit: str,
    credit: str,
    amount: int | None,
    mode: TransferMode = TransferMode.POSTED,
    pending_id: str = "",
) -> TransferRequest:
    return TransferRequest(tid, mode, debit, credit, amount, "EUR" if debit else "", pending_id)


async def _balances(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int, int]]:
    rows = await conn.fetch(
        "select id, debits_pending_minor, debits_posted_minor, credits_pending_minor,"
        " credits_posted_minor from accounts order by id"
    )
    return {r["id"]: tuple(r.values())[1:] for r in rows}  # type: ignore[misc]


async def test_batch_persists_and_reloads_identically(funded: asyncpg.Connection) -> None:
    requests = [
        _t("p1", "alice", "bob", 300),
        _t("hold", "alice", "bob", 200, TransferMode.PENDING),
        _t("p2", "alice", "bob", 600),  # refused: 300 + 200 held leaves 500
        _t("cap", "", "", 150, TransferMode.POST_PENDING, pending_id="hold"),
    ]
    results = await _run_batch(funded, requests, epoch=1, now_us=2, offset=2)
    assert results == [TransferResult.OK, TransferResult.OK, TransferResult.INSUFFICIENT_FUNDS, TransferResult.OK]
    assert await _balances(funded) == {"alice": (0, 450, 0, 1000), "bob": (0, 0, 0, 450), "world": (0, 1000, 0, 0)}

    # Σ debits = Σ credits, and balances equal the sum of entries
    assert await funded.fetchval("select sum(debits_posted_minor) - sum(credits_posted_minor) from accounts") == 0
    mismatches = await funded.fetchval("""
        select count(*) from accounts a where a.debits_posted_minor <> coalesce((select sum(amount_minor)
          from entries e where e.account_id = a.id and e.side = 'debit'), 0)
          or a.credits_posted_minor <> coalesce((select sum(amount_minor) from entries e
          where e.account_id = a.id and e.side = 'credit'), 0)""")
    assert mismatches == 0

    # the whole batch again (a redelivery): nothing changes, every answer is the same or 'exists'
    again = await _run_batch(funded, requests, epoch=1, now_us=3, offset=2)
    assert again == [
        TransferResult.EXISTS,
        TransferResult.EXISTS,
        TransferResult.INSUFFICIENT_FUNDS,
        TransferResult.EXISTS,
    ]
    assert (await _balances(funded))["alice"] == (0, 450, 0, 1000)
    assert await funded.fetchval("select pending_state from transfers where id = 'hold'") == "posted"
    assert await funded.fetchval("select next_offset from consumed_offsets") == 2


async def test_a_fenced_writer_commits_nothing(funded: asyncpg.Connection) -> None:
    before = await _balances(funded)
    await _claim(funded, epoch=2)  # another writer took over
    with pytest.raises(FencedError, match="stale"):
        await _run_batch(funded, [_t("late", "alice", "bob", 10)], epoch=1, now_us=5, offset=9)
    assert await _balances(funded) == before
    assert await funded.fetchval("select count(*) from transfers where id = 'late'") == 0
    assert await funded.fetchval("select next_offset from consumed_offsets") == 1
