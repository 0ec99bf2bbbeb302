"""What every payment-path fault test drives and proves.

``PayingClient`` creates payments through the REST gateway the way a careful merchant does: one
Idempotency-Key per payment (also its description, so the database can be checked per key), retried
with the same key and body on 409, 429, 5xx and connection errors until the payment is accepted, for
a bounded time. ``assert_exactly_once_and_settled`` then proves the contract: every accepted key made
exactly one payment, nothing was made for a key that was never accepted, every payment reached a
terminal status, the ledger holds each succeeded payment once and ``ledger verify`` passes.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import asyncpg

from payplane.adapters.ledger_verify import verify
from tests.integration.payments.rail_stack import Client, ledger_accounts_opened

TERMINAL_S: Final = 60.0  # the mission: every accepted payment terminal within 60 s after the faults stop
TERMINAL: Final = frozenset({"succeeded", "failed", "canceled", "refunded", "authorized", "requires_review"})
RETRY_PAUSE_S: Final = 0.1
REQUEST_TIMEOUT_S: Final = 15.0


@dataclass
class PayingClient:
    http: aiohttp.ClientSession
    client: Client
    base_url: str
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key → payment id
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status (0: no answer) → count
    bodies: list[dict[str, Any]] = field(default_factory=list)  # error bodies seen, for assertions

    def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.client.key}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    async def post(self, path: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        """One attempt: (status, JSON answer); status 0 when no HTTP answer came."""
        try:
            async with self.http.post(
                self.base_url + path,
                json=body,
                headers=self.headers(key),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                status, answer = response.status, await response.json()
        except (aiohttp.ClientError, TimeoutError):
            status, answer = 0, {}
        self.answers[status] = self.answers.get(status, 0) + 1
        if status != 200:
            self.bodies.append(answer)
        return status, answer

    async def open_accounts(self, ledger_dsn: str, currency: str = "EUR") -> tuple[str, str]:
        """An external funding source and a wallet, both opened in the ledger."""
        ids = []
        for kind in ("external", "wallet"):
            status, account = await self.post("/v1/accounts", {"currency": currency, "type": kind}, new_key())
            assert status == 200, account
            ids.append(account["id"])
        await ledger_accounts_opened(ledger_dsn, ids, TERMINAL_S)
        return ids[0], ids[1]

    async def pay(self, source: str, destination: str, amount_minor: int, key: str, deadline_s: float) -> str | None:
        """Create one payment with ``key``, retrying until accepted or ``deadline_s`` (monotonic)."""
        body = {"amount": amount_minor, "currency": "EUR", "source": source, "destination": destination}
        body["description"] = key
        while time.monotonic() < deadline_s:
            status, answer = await self.post("/v1/payments", body, key)
            if status == 200:
                self.accepted[key] = answer["id"]
                return str(answer["id"])
            if status in (0, 409, 429) or status >= 500:
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            raise AssertionError(f"payment {key} refused for good: {status} {answer}")
        return None


def new_key() -> str:
    return f"fault-{uuid.uuid4().hex}"


async def wait_terminal(payments_dsn: str, payment_ids: list[str], timeout_s: float = TERMINAL_S) -> dict[str, str]:
    """Bounded wait until none of these payments is processing or has an action pending; their statuses."""
    conn = await asyncpg.connect(payments_dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await conn.fetch(
                "select id, status, pending_action from payments where id = any($1::text[])", payment_ids
            )
            statuses = {r["id"]: r["status"] for r in rows}
            busy = [r["id"] for r in rows if r["status"] not in TERMINAL or r["pending_action"]]
            if not busy or time.monotonic() >= deadline:
                assert not busy, f"{len(busy)} payments not terminal after {timeout_s} s, e.g. {busy[:3]}"
                return statuses
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _outbox_drained(conn: asyncpg.Connection, timeout_s: float = TERMINAL_S) -> int:
    """Bounded wait until every outbox row is published (the events of the last settlements may still be
    on their way); the number left."""
    deadline = time.monotonic() + timeout_s
    while True:
        unpublished = int(await conn.fetchval("select count(*) from outbox"))
        if unpublished == 0 or time.monotonic() >= deadline:
            return unpublished
        await asyncio.sleep(0.1)


async def assert_exactly_once_and_settled(
    payments_dsn: str, ledger_dsn: str, accepted: dict[str, str], tried_keys: set[str], wallet: str
) -> None:
    """The fault contract, checked in the databases themselves (not through the API under test)."""
    statuses = await wait_terminal(payments_dsn, list(accepted.values()))
    conn = await asyncpg.connect(payments_dsn)
    try:
        rows = await conn.fetch(
            "select description, id, amount_minor, status from payments where description = any($1::text[])",
            sorted(tried_keys),
        )
        unpublished = await _outbox_drained(conn)
    finally:
        await conn.close()
    per_key: dict[str, list[str]] = {}
    for row in rows:
        per_key.setdefault(row["description"], []).append(row["id"])
    duplicated = {k: ids for k, ids in per_key.items() if len(ids) > 1}
    assert not duplicated, f"keys with more than one payment: {list(duplicated.items())[:3]}"
    unaccepted = set(per_key) - set(accepted)
    assert not unaccepted, f"payments exist for keys never accepted: {sorted(unaccepted)[:3]}"
    assert {k: ids[0] for k, ids in per_key.items()} == accepted, "an accepted payment is missing or differs"
    assert set(statuses.values()) == {"succeeded"}, f"statuses: {sorted(set(statuses.values()))}"
    assert unpublished == 0, f"{unpublished} outbox rows were never published"

    expected_minor = sum(r["amount_minor"] for r in rows)
    ledger = await asyncpg.connect(ledger_dsn)
    try:
        transfers = await ledger.fetchval(
            "select count(*) from transfers where id = any($1::text[])", list(accepted.values())
        )
        deadline = time.monotonic() + TERMINAL_S  # a cross-partition credit leg may still be on its way
        while True:
            credited = await ledger.fetchval("select credits_posted_minor from accounts where id = $1", wallet)
            if credited == expected_minor or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        report = await verify(ledger)
    finally:
        await ledger.close()
    assert transfers == len(accepted), f"{transfers} ledger transfers for {len(accepted)} payments"
    assert credited == expected_minor, f"the wallet was credited {credited}, the payments sum to {expected_minor}"
    assert report.passed, report.render()
