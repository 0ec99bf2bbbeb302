"""Read-only ledger lookups for operators: one account, its balance, one transfer (with its entries)."""

import json
from typing import Any

import asyncpg

ACCOUNT_SQL = """select id, partition, currency, owner, status, internal, debits_must_not_exceed_credits,
                        credits_must_not_exceed_debits, overdraft_limit_minor, debits_pending_minor,
                        debits_posted_minor, credits_pending_minor, credits_posted_minor, created_at_us
                 from accounts where id = $1"""
TRANSFER_SQL = """select id, partition, mode, kind, debit_account_id, credit_account_id, amount_minor, currency,
                         pending_id, pending_state, expires_at_us, payment_ref, applied_at_us
                  from transfers where id = $1"""


async def account(conn: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(ACCOUNT_SQL, account_id)
    return dict(row) if row else None


async def balance(conn: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    found = await account(conn, account_id)
    if found is None:
        return None
    posted = found["credits_posted_minor"] - found["debits_posted_minor"]
    return {
        "account_id": account_id,
        "currency": found["currency"],
        "posted_balance_minor": posted,
        "pending_debits_minor": found["debits_pending_minor"],
        "pending_credits_minor": found["credits_pending_minor"],
        "available_minor": posted - found["debits_pending_minor"] + found["overdraft_limit_minor"],
    }


async def transfer(conn: asyncpg.Connection, transfer_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(TRANSFER_SQL, transfer_id)
    if row is None:
        rejected = await conn.fetchrow("select id, result, request from rejections where id = $1", transfer_id)
        if rejected is None:
            return None
        return {"id": rejected["id"], "refused": rejected["result"], "request": json.loads(rejected["request"])}
    entries = await conn.fetch(
        "select account_id, side, amount_minor from entries where transfer_id = $1 order by side", transfer_id
    )
    return {**dict(row), "entries": [dict(e) for e in entries]}
