"""``payplane ledger verify``: check the ledger's invariants online, against live data.

Exit status 0 when every invariant holds, 2 when any is violated (the report names each violation),
1 when the database cannot be reached.
"""

import argparse
import asyncio
import os
import sys

import asyncpg

from payplane.adapters.ledger_verify import verify

EXIT_VIOLATED = 2


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ledger = subparsers.add_parser("ledger", help="inspect and verify the double-entry ledger")
    verbs = ledger.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("verify", help="check Σ = 0 per currency, balances = Σ entries, limits, holds")
    check.add_argument(
        "--dsn",
        default=os.environ.get("PAYPLANE_LEDGER_DSN") or os.environ.get("PAYPLANE_POSTGRES_DSN"),
        help="the shard database (default: $PAYPLANE_LEDGER_DSN, then $PAYPLANE_POSTGRES_DSN)",
    )
    ledger.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.dsn:
        print("payplane ledger verify: no database; pass --dsn or set PAYPLANE_LEDGER_DSN", file=sys.stderr)
        return 1
    return asyncio.run(_verify(args.dsn))


async def _verify(dsn: str) -> int:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"payplane ledger verify: cannot connect: {exc}", file=sys.stderr)
        return 1
    try:
        report = await verify(conn)
    finally:
        await conn.close()
    print(report.render())
    return 0 if report.passed else EXIT_VIOLATED
