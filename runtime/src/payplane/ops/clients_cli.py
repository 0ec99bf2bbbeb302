"""``payplane clients create|list|revoke``: API clients of a rail and their keys (printed as JSON).

The key is printed once, at creation; only its SHA-256 is stored. ``--dsn`` (or PAYPLANE_PAYMENTS_DSN)
names the rail's payments database, which is migrated first so a fresh rail works.
"""

import argparse
import asyncio
import json
import os
import sys

import asyncpg

from payplane.adapters import api_clients
from payplane.adapters.payments_store import MIGRATIONS_PACKAGE
from payplane.adapters.postgres_migrations import migrate


async def _run(args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(args.dsn, timeout=10)
    try:
        await migrate(conn, MIGRATIONS_PACKAGE)
        if args.action == "create":
            client, key = await api_clients.create(conn, args.name, args.role)
            print(json.dumps({"id": client.id, "name": client.name, "role": client.role, "api_key": key}))
            return 0
        if args.action == "list":
            print(json.dumps(await api_clients.list_all(conn), indent=2))
            return 0
        if await api_clients.revoke(conn, args.client_id):
            print(json.dumps({"id": args.client_id, "revoked": True}))
            return 0
        print(f"no active client {args.client_id!r}", file=sys.stderr)
        return 4
    finally:
        await conn.close()


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("clients", help="create, list and revoke API clients (keys stored hashed)")
    parser.add_argument("--dsn", default=os.environ.get("PAYPLANE_PAYMENTS_DSN"), help="the rail's payments database")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a client and print its API key (shown once)")
    create.add_argument("name")
    create.add_argument("--role", choices=api_clients.ROLES, default="client")
    actions.add_parser("list", help="list clients (never their keys)")
    revoke = actions.add_parser("revoke", help="revoke a client's key")
    revoke.add_argument("client_id")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if not args.dsn:
        print("give --dsn or set PAYPLANE_PAYMENTS_DSN", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))
