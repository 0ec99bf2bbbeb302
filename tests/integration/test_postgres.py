"""Real PostgreSQL through asyncpg: commit, rollback, and unique violations surfacing as such."""

import uuid

import asyncpg
import pytest

from tests.integration.conftest import Infra


class _AbortError(Exception):
    pass


async def _insert_then_fail(conn: asyncpg.Connection, table: str) -> None:
    """Insert inside a transaction, then fail: the insert must roll back."""
    try:
        async with conn.transaction():
            await conn.execute(f"insert into {table} values ('rolled-back', 200)")
            raise _AbortError
    except _AbortError:
        return
    pytest.fail("the transaction block did not raise")


async def test_commit_rollback_and_unique_violation(infra: Infra) -> None:
    conn = await asyncpg.connect(infra["PAYPLANE_POSTGRES_DSN"])
    table = f"smoke_{uuid.uuid4().hex[:8]}"
    try:
        version = await conn.fetchval("show server_version_num")
        assert int(version) // 10000 == 15
        await conn.execute(f"create table {table} (id text primary key, amount_minor bigint not null)")

        async with conn.transaction():
            await conn.execute(f"insert into {table} values ('committed', 100)")

        await _insert_then_fail(conn, table)

        rows = await conn.fetch(f"select id, amount_minor from {table} order by id")
        assert [(r["id"], r["amount_minor"]) for r in rows] == [("committed", 100)]

        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(f"insert into {table} values ('committed', 300)")
        assert await conn.fetchval(f"select amount_minor from {table} where id = 'committed'") == 100
    finally:
        await conn.execute(f"drop table if exists {table}")
        await conn.close()


async def test_durability_settings_are_on(infra: Infra) -> None:
    """Ledger benchmarks claim durable commits: the server must really fsync."""
    conn = await asyncpg.connect(infra["PAYPLANE_POSTGRES_DSN"])
    try:
        assert await conn.fetchval("show fsync") == "on"
        assert await conn.fetchval("show synchronous_commit") == "on"
    finally:
        await conn.close()
