"""Versioned, forward-only schema migrations for a PostgreSQL database, applied idempotently.

Migrations are ``NNNN_name.sql`` files in a Python package. ``migrate`` applies the missing ones in
order, all in one transaction under an advisory lock (two writers starting together never both
migrate), records each with a checksum, and refuses to run when an applied migration was edited or
when the database is ahead of the code.
"""

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x70617970  # "payp": one advisory lock id for every payplane migrator


class MigrationError(Exception):
    """The database and the code disagree about the schema; nothing was changed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in ``package``, in version order, with no gaps."""
    found = []
    for item in resources.files(package).iterdir():
        match = _MIGRATION_FILE.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text()))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise MigrationError(f"migrations in {package} must be numbered 1..n without gaps")
    return found


async def migrate_database(dsn: str, package: str, connect_timeout_s: float = 10.0) -> list[int]:
    """``migrate`` on a connection of its own, closed afterwards: what a workload does at start."""
    conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
    try:
        return await migrate(conn, package)
    finally:
        await conn.close()


async def migrate(conn: asyncpg.Connection, package: str, target_version: int | None = None) -> list[int]:
    """Apply the missing migrations of ``package`` (up to ``target_version``, default all); return the
    versions applied now (often none). Tests stop at a version to load data the next migration must keep."""
    migrations = load_migrations(package)
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "create table if not exists schema_migrations ("
            " version integer primary key, name text not null, checksum text not null,"
            " applied_at timestamptz not null default now())"
        )
        applied = {
            r["version"]: r["checksum"] for r in await conn.fetch("select version, checksum from schema_migrations")
        }
        _check_history(migrations, applied)
        newly_applied = []
        for migration in migrations:
            if migration.version in applied or (target_version is not None and migration.version > target_version):
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            newly_applied.append(migration.version)
    return newly_applied


def _check_history(migrations: list[Migration], applied: dict[int, str]) -> None:
    known = {m.version: m for m in migrations}
    ahead = sorted(v for v in applied if v not in known)
    if ahead:
        raise MigrationError(
            f"the database has schema versions {ahead} that this code does not know: it is newer than "
            "the code; deploy the newer code (migrations are forward-only)"
        )
    edited = sorted(v for v, checksum in applied.items() if known[v].checksum != checksum)
    if edited:
        raise MigrationError(f"applied migrations {edited} were edited after being applied; add a new migration")
