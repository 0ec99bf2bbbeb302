"""Schema migrations on real PostgreSQL: idempotent, concurrent-safe, forward-only, tamper-evident."""

import asyncio

import asyncpg
import pytest

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE
from payplane.adapters.postgres_migrations import MigrationError, load_migrations, migrate


async def test_applies_once_then_nothing(shard_dsn: str) -> None:
    conn = await asyncpg.connect(shard_dsn)
    try:
        applied = await migrate(conn, MIGRATIONS_PACKAGE)
        assert applied == [m.version for m in load_migrations(MIGRATIONS_PACKAGE)]
        assert await migrate(conn, MIGRATIONS_PACKAGE) == []
        tables = {r["tablename"] for r in await conn.fetch("select tablename from pg_tables where schemaname='public'")}
        assert {"accounts", "transfers", "entries", "rejections", "outbox", "consumed_offsets"} <= tables
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
