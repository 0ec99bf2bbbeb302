"""``payplane ledger verify|account|balance|transfer``: check and read the ledger, online.

``verify`` exits 0 when every invariant holds, 2 when any is violated (the report names each
violation), 1 when the database cannot be reached. The read commands print JSON and exit 4 when the
account or transfer does not exist.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from payplane.adapters import ledger_queries
from payplane.adapters.ledger_verify import verify_shards

EXIT_VIOLATED = 2
EXIT_NOT_FOUND = 4
LOOKUPS: dict[str, Callable[[asyncpg.Connection, str], Awaitable[dict[str, Any] | None]]] = {
    "account": ledger_queries.account,
    "balance": ledger_queries.balance,
    "transfer": ledger_queries.transfer,
}


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ledger = subparsers.add_parser("ledger", help="inspect and verify the double-entry ledger")
    verbs = ledger.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("verify", help="check Σ = 0 per currency, balances = Σ entries, limits, holds")
    check.add_argument(
        "--dsn",
        action="append",
        help="a shard database; repeat for every shard of the rail so cross-partition transfers can be "
        "followed across them (default: $PAYPLANE_LEDGER_DSN, then $PAYPLANE_POSTGRES_DSN)",
    )
    for name, text in [
        ("account", "one account"),
        ("balance", "an account's balances"),
        ("transfer", "one transfer with its entries, or why it was refused"),
    ]:
        lookup = verbs.add_parser(name, help=f"print {text} as JSON")
        lookup.add_argument("id")
        _add_dsn(lookup)
    ledger.set_defaults(handler=run)


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PAYPLANE_LEDGER_DSN") or os.environ.get("PAYPLANE_POSTGRES_DSN"),
        help="the shard database (default: $PAYPLANE_LEDGER_DSN, then $PAYPLANE_POSTGRES_DSN)",
    )


def run(args: argparse.Namespace) -> int:
    if args.verb == "verify" and not args.dsn:
        fallback = os.environ.get("PAYPLANE_LEDGER_DSN") or os.environ.get("PAYPLANE_POSTGRES_DSN")
        args.dsn = [fallback] if fallback else None
    if not args.dsn:
        print(f"payplane ledger {args.verb}: no database; pass --dsn or set PAYPLANE_LEDGER_DSN", file=sys.stderr)
        return 1
    if args.verb == "verify":
        return asyncio.run(_verify(args.dsn))
    return asyncio.run(_lookup(args.dsn, args.verb, args.id))


async def _lookup(dsn: str, verb: str, item_id: str) -> int:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"payplane ledger {verb}: cannot connect: {exc}", file=sys.stderr)
        return 1
    try:
        found = await LOOKUPS[verb](conn, item_id)
    finally:
        await conn.close()
    if found is None:
        print(f"payplane ledger {verb}: {item_id!r} not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(json.dumps(found, indent=2, sort_keys=True))
    return 0


async def _verify(dsns: list[str]) -> int:
    conns: list[asyncpg.Connection] = []
    try:
        for dsn in dsns:
            conns.append(await asyncpg.connect(dsn, timeout=10))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"payplane ledger verify: cannot connect: {exc}", file=sys.stderr)
        return 1
    try:
        report = await verify_shards(conns, time.time_ns() // 1000)
    finally:
        for conn in conns:
            await conn.close()
    print(report.render())
    return 0 if report.passed else EXIT_VIOLATED
