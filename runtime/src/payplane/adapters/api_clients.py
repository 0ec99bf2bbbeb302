"""API clients of a rail (merchants, apps, admins) and their keys, in the rail's payments database.

A key is ``sk_<key_id>_<secret>``: ``key_id`` finds the row, and the SHA-256 of the whole key is what
is stored (the secret has 256 bits of entropy, so a slow hash adds nothing). The gateway compares hashes
with ``hmac.compare_digest``. A key is shown once, at creation; revoking keeps the row for the record.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

ROLES = ("client", "admin")


@dataclass(frozen=True)
class ApiClient:
    id: str
    name: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != "sk" or not parts[1] or not parts[2]:
        return None
    return parts[1]


def matches(stored_hash: str, presented_key: str) -> bool:
    return hmac.compare_digest(stored_hash.encode(), hash_key(presented_key).encode())


async def create(conn: asyncpg.Connection | PoolConnectionProxy, name: str, role: str) -> tuple[ApiClient, str]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    client_id = f"cli_{secrets.token_hex(8)}"
    key_id = secrets.token_hex(8)
    key = f"sk_{key_id}_{secrets.token_urlsafe(32).replace('_', '-')}"
    await conn.execute(
        "insert into api_clients (id, name, role, key_id, key_hash) values ($1, $2, $3, $4, $5)",
        client_id,
        name,
        role,
        key_id,
        hash_key(key),
    )
    return ApiClient(client_id, name, role), key


async def list_all(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select id, name, role, key_id, created_at, revoked_at from api_clients order by created_at, id"
    )
    return [
        {
            **dict(r),
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat(),
        }
        for r in rows
    ]


async def revoke(conn: asyncpg.Connection, client_id: str) -> bool:
    status = await conn.execute(
        "update api_clients set revoked_at = now() where id = $1 and revoked_at is null", client_id
    )
    return bool(status.endswith(" 1"))


async def authenticate(pool: asyncpg.Pool, presented_key: str) -> ApiClient | None:
    key_id = key_id_of(presented_key)
    if key_id is None:
        return None
    row = await pool.fetchrow(
        "select id, name, role, key_hash from api_clients where key_id = $1 and revoked_at is null", key_id
    )
    if row is None or not matches(row["key_hash"], presented_key):
        return None
    return ApiClient(row["id"], row["name"], row["role"])
