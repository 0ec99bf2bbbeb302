"""Schema migrations on real PostgreSQL: idempotent, concurrent-safe, forward-only, tamper-evident."""

import asyncio
import json

import asyncpg
import pytest

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE
from payplane.adapters.ledger_verify import verify
from payplane.adapters.postgres_migrations import MigrationError, load_migrations, migrate


async def test_applies_once_then_nothing(shard_dsn: str) -> None:
    conn = await asyncpg.connect(shard_dsn)
    try:
        applied = await migrate(conn, MIGRATIONS_PACKAGE)
        assert applied == [m.version for m in load_migrations(MIGRATIONS_PACKAGE)]
        assert await migrate(conn, MIGRATIONS_PACKAGE) == []
        tables = {r["tablename"] for r in await conn.fetch("select tablename from pg_tables where schemaname='public'")}
        assert {"accounts", "transfers", "rejections", "outbox", "consumed_offsets"} <= tables
        views = {r["viewname"] for r in await conn.fetch("select viewname from pg_views where schemaname='public'")}
        assert "entries" in views
    finally:
        await conn.close()


async def test_two_writers_starting_together_migrate_once(shard_dsn: str) -> None:
    conns = [await asyncpg.connect(shard_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, MIGRATIONS_PACKAGE) for c in conns))
        assert sorted(len(r) for r in results)[-1] == len(load_migrations(MIGRATIONS_PACKAGE))
        assert sum(len(r) for r in results) == len(load_migrations(MIGRATIONS_PACKAGE))
    finally:
        for c in conns:
            await c.close()


async def test_refuses_a_database_ahead_of_the_code(shard: asyncpg.Connection) -> None:
    await shard.execute("insert into schema_migrations (version, name, checksum) values (999, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer than the code"):
        await migrate(shard, MIGRATIONS_PACKAGE)


async def test_refuses_an_edited_migration(shard: asyncpg.Connection) -> None:
    await shard.execute("update schema_migrations set checksum = 'tampered' where version = 1")
    with pytest.raises(MigrationError, match="edited"):
        await migrate(shard, MIGRATIONS_PACKAGE)


async def test_schema_constraints_hold_on_data(shard: asyncpg.Connection) -> None:
    """The database itself refuses what the engine must never produce: limits broken, negative amounts."""
    await shard.execute(
        "insert into accounts (id, partition, currency, owner, debits_must_not_exceed_credits, created_at_us)"
        " values ('a', 0, 'EUR', 'o', true, 0)"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await shard.execute("update accounts set debits_posted_minor = 1 where id = 'a'")
    with pytest.raises(asyncpg.CheckViolationError):
        await shard.execute(
            "insert into accounts (id, partition, currency, owner, created_at_us) values ('b', 0, 'eur', 'o', 0)"
        )


async def test_each_migration_keeps_existing_data(shard_dsn: str) -> None:
    """Data written under every earlier schema survives the later migrations with the same meaning."""
    conn = await asyncpg.connect(shard_dsn)
    try:
        await migrate(conn, MIGRATIONS_PACKAGE, target_version=1)
        await conn.execute(
            "insert into accounts (id, partition, currency, owner, created_at_us) values"
            " ('w', 0, 'EUR', 'rail', 0), ('a', 0, 'EUR', 'a', 0)"
        )
        await conn.execute(
            "update accounts set debits_posted_minor = 70 where id = 'w';"
            " update accounts set credits_posted_minor = 70 where id = 'a'"
        )
        await conn.execute(
            "insert into transfers (id, partition, mode, kind, debit_account_id, credit_account_id, amount_minor,"
            " currency, request, applied_at_us) values ('t1', 0, 'posted', 'payment', 'w', 'a', 70, 'EUR', '{}', 1)"
        )
        await conn.execute("insert into entries values ('t1', 'w', 'debit', 70, 0), ('t1', 'a', 'credit', 70, 0)")
        await conn.execute("insert into outbox (partition, topic, payload) values (0, 'results', 'x')")

        await migrate(conn, MIGRATIONS_PACKAGE, target_version=2)  # hot-path foreign keys dropped
        await migrate(conn, MIGRATIONS_PACKAGE, target_version=3)  # outbox rows gain a Kafka partition
        assert await conn.fetchval("select kafka_partition from outbox") is None
        await migrate(conn, MIGRATIONS_PACKAGE, target_version=4)  # entries become a view over posted transfers
        await conn.execute(
            "insert into rejections (id, partition, result, request, rejected_at_us)"
            """ values ('r1', 0, 'insufficient_funds', '{"id": "r1", "mode": "posted", "forward_to": "x"}', 2)"""
        )
        await migrate(conn, MIGRATIONS_PACKAGE)  # requests kept as the text the writer wrote
        stored = await conn.fetchval("select request from rejections where id = 'r1'")
        assert json.loads(stored) == {"id": "r1", "mode": "posted", "forward_to": "x"}
        assert await conn.fetchval("select request::jsonb->>'forward_to' from rejections") == "x"
        entries = sorted(
            tuple(r) for r in await conn.fetch("select transfer_id, account_id, side, amount_minor from entries")
        )
        assert entries == [("t1", "a", "credit", 70), ("t1", "w", "debit", 70)]
        report = await verify(conn)
        assert report.passed, report.render()
    finally:
        await conn.close()
