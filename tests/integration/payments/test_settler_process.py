"""Settlement in a process of its own (`payplane payment-settler`), as the operator runs it beside each
payment worker: a worker started with PAYPLANE_SETTLEMENT=separate accepts payments and settles none;
the settler relays the outbox and applies the ledger's outcomes, exports the settlement metrics the
worker no longer does, and a settler killed with SIGKILL loses nothing its successor does not finish."""

import asyncio
import socket
import time
import uuid
from urllib.request import urlopen

import aiohttp
import asyncpg

from tests.integration.conftest import Infra
from tests.integration.payments.conftest import Procs
from tests.integration.payments.rail_stack import Client, RailStack, ledger_accounts_opened, rail_stack
from tests.integration.test_spire import Spire

PAYMENTS = 12
SETTLE_TIMEOUT_S = 60.0
UNSETTLED_WAIT_S = 2.0  # long enough for a worker that settles in-process to have published everything


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _metric(port: int, line_start: str) -> float | None:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


class _Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, client: Client) -> None:
        self.http, self.base_url, self.client = http, base_url, client

    async def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        headers = {"Authorization": f"Bearer {self.client.key}", "Idempotency-Key": uuid.uuid4().hex}
        async with self.http.post(self.base_url + path, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, object] = await response.json()
            return answer

    async def statuses(self, payment_ids: list[str]) -> list[object]:
        found = []
        for payment_id in payment_ids:
            headers = {"Authorization": f"Bearer {self.client.key}"}
            async with self.http.get(f"{self.base_url}/v1/payments/{payment_id}", headers=headers) as response:
                found.append((await response.json())["status"])
        return found

    async def pay(self, source: object, wallet: object, count: int) -> list[str]:
        body = {"amount": 250, "currency": "EUR", "source": source, "destination": wallet}
        return [str((await self.post("/v1/payments", body))["id"]) for _ in range(count)]


async def _until_settled(api: _Api, payment_ids: list[str]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (statuses := await api.statuses(payment_ids)) != ["succeeded"] * len(payment_ids):
        assert time.monotonic() < deadline, f"not settled within {SETTLE_TIMEOUT_S:.0f} s: {statuses}"
        await asyncio.sleep(0.2)


async def _outbox_rows(stack: RailStack) -> int:
    conn = await asyncpg.connect(stack.payments_dsn)
    try:
        rows: int = await conn.fetchval("select count(*) from outbox")
        return rows
    finally:
        await conn.close()


async def test_the_settler_settles_what_a_separate_worker_accepted(infra: Infra, spire: Spire) -> None:
    procs = Procs()
    async with rail_stack(
        spire=spire,
        procs=procs,
        postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
        bootstrap=infra["KAFKA_BOOTSTRAP"],
        redis_url=infra["PAYPLANE_REDIS_URL"],
        prefix="settle",
    ) as stack:
        worker_metrics, settler_metrics = _free_port(), _free_port()
        stack.spawn_writer()
        _, worker_port = stack.spawn_worker(PAYPLANE_SETTLEMENT="separate", PAYPLANE_METRICS_PORT=str(worker_metrics))
        _, gateway_port = stack.spawn_gateway(worker_port)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            api = _Api(http, f"http://127.0.0.1:{gateway_port}", stack.clients[0])
            source = (await api.post("/v1/accounts", {"currency": "EUR", "type": "external"}))["id"]
            wallet = (await api.post("/v1/accounts", {"currency": "EUR", "type": "wallet"}))["id"]
            first = await api.pay(source, wallet, PAYMENTS)

            # the worker accepted everything and settles nothing: its outbox waits for a settler
            await asyncio.sleep(UNSETTLED_WAIT_S)
            assert await api.statuses(first) == ["processing"] * PAYMENTS
            assert await _outbox_rows(stack) == 2 + PAYMENTS  # two account openings, one command per payment
            assert _metric(worker_metrics, "payplane_payment_create_batch_size_count") is not None
            assert _metric(worker_metrics, 'payplane_payments_total{status="succeeded"}') is None

            settler = stack.spawn_settler(PAYPLANE_METRICS_PORT=str(settler_metrics))
            await ledger_accounts_opened(stack.ledger_dsn, [str(source), str(wallet)], SETTLE_TIMEOUT_S)
            await _until_settled(api, first)
            assert _metric(settler_metrics, 'payplane_payments_total{status="succeeded"}') == PAYMENTS
            assert _metric(settler_metrics, "payplane_payment_accept_to_settled_seconds_count") == PAYMENTS

            # SIGKILL at any moment loses nothing: what it left is finished by the next settler
            second = await api.pay(source, wallet, PAYMENTS)
            settler.kill()
            settler.wait(timeout=10)
            third = await api.pay(source, wallet, PAYMENTS)
            stack.spawn_settler()
            await _until_settled(api, [*second, *third])
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while await _outbox_rows(stack):  # every ledger command and payment event published
                assert time.monotonic() < deadline, "the outbox did not drain"
                await asyncio.sleep(0.2)
