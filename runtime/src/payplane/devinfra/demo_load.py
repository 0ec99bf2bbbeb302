"""The demo load of ``payplane up``: payments at a small, bounded rate through the rail's gateway.

It opens two accounts of one client (an external funding source and a wallet), waits until a first
payment settles (the ledger opens accounts asynchronously), then creates payments with fresh
``Idempotency-Key``s at ``rate_per_s`` — every tenth one sent twice with the same key, which must
replay the same payment — and follows each to its final status. Gateways are taken in turn.
"""

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

REQUEST_TIMEOUT_S: Final = 15.0
SETTLE_WAIT_MS: Final = 8000
FIRST_SETTLE_TIMEOUT_S: Final = 90.0
FOLLOWERS_MAX: Final = 16
REPLAY_EVERY: Final = 10


class DemoLoadError(Exception):
    """The demo could not get payments through; the message says what the gateway answered."""


@dataclass
class LoadStats:
    created: int = 0
    replays_matching: int = 0
    rejected: Counter[int] = field(default_factory=Counter)  # HTTP status → count
    final: Counter[str] = field(default_factory=Counter)  # payment status → count
    accept_latency_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        latencies = sorted(self.accept_latency_s[-1000:])
        p50_ms = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
        finals = ", ".join(f"{n} {status}" for status, n in sorted(self.final.items())) or "none followed yet"
        rejected = f"; rejected: {dict(self.rejected)}" if self.rejected else ""
        return f"{self.created} payments created ({finals}; accept p50 {p50_ms:.0f} ms){rejected}"


class DemoLoad:
    def __init__(self, gateway_urls: Callable[[], list[str]], api_key: str, currency: str) -> None:
        self._gateway_urls = gateway_urls
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self.currency = currency
        self.stats = LoadStats()
        self.source = ""
        self.destination = ""
        self._turn = itertools.count()
        self._followers = asyncio.Semaphore(FOLLOWERS_MAX)
        self._tasks: set[asyncio.Task[None]] = set()

    def _url(self, path: str) -> str:
        urls = self._gateway_urls()
        if not urls:
            raise DemoLoadError("the rail has no ready gateway")
        return urls[next(self._turn) % len(urls)] + path

    async def _post(
        self, http: aiohttp.ClientSession, path: str, body: dict[str, Any], key: str
    ) -> tuple[int, dict[str, Any]]:
        headers = {**self._headers, "Idempotency-Key": key}
        async with http.post(self._url(path), json=body, headers=headers) as response:
            return response.status, await response.json()

    async def open_accounts(self, http: aiohttp.ClientSession) -> None:
        for kind in ("external", "wallet"):
            status, account = await self._post(
                http, "/v1/accounts", {"currency": self.currency, "type": kind}, f"demo-account-{uuid.uuid4()}"
            )
            if status != 200:
                raise DemoLoadError(f"creating a {kind} account answered {status}: {account}")
            if kind == "external":
                self.source = account["id"]
            else:
                self.destination = account["id"]

    def payment_body(self, amount_minor: int) -> dict[str, Any]:
        return {
            "amount": amount_minor,
            "currency": self.currency,
            "source": self.source,
            "destination": self.destination,
        }

    async def settle(self, http: aiohttp.ClientSession, payment_id: str) -> str:
        url = self._url(f"/v1/payments/{payment_id}?wait_ms={SETTLE_WAIT_MS}")
        async with http.get(url, headers=self._headers) as response:
            payment = await response.json()
        return str(payment.get("status", f"http {response.status}"))

    async def first_payment(self, http: aiohttp.ClientSession) -> None:
        """Retry a first payment until one succeeds: the ledger opens new accounts asynchronously."""
        deadline = time.monotonic() + FIRST_SETTLE_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            try:
                status, payment = await self._post(http, "/v1/payments", self.payment_body(100), f"demo-{uuid.uuid4()}")
                if status == 200:
                    last = await self.settle(http, payment["id"])
                    if last == "succeeded":
                        return
                else:
                    last = f"HTTP {status}: {payment}"
            except (aiohttp.ClientError, TimeoutError, DemoLoadError) as exc:  # a gateway restarting: retried
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(1.0)
        raise DemoLoadError(f"no payment settled within {FIRST_SETTLE_TIMEOUT_S:.0f} s (last: {last})")

    async def one_payment(self, http: aiohttp.ClientSession, number: int) -> None:
        key = f"demo-{uuid.uuid4()}"
        body = self.payment_body(100 + number % 5000)
        started_s = time.perf_counter()
        status, payment = await self._post(http, "/v1/payments", body, key)
        if status != 200:
            self.stats.rejected[status] += 1
            return
        self.stats.accept_latency_s.append(time.perf_counter() - started_s)
        self.stats.created += 1
        if number % REPLAY_EVERY == 0:
            replay_status, replayed = await self._post(http, "/v1/payments", body, key)
            if replay_status == 200 and replayed.get("id") == payment["id"]:
                self.stats.replays_matching += 1
        async with self._followers:
            self.stats.final[await self.settle(http, payment["id"])] += 1

    async def run(self, stopping: asyncio.Event, rate_per_s: float, count_max: int | None = None) -> LoadStats:
        """Accounts, a first settled payment, then payments until ``stopping`` (or ``count_max``)."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await self.open_accounts(http)
            await self.first_payment(http)
            interval_s = 1.0 / rate_per_s
            for number in itertools.count(1):
                if stopping.is_set() or (count_max is not None and number > count_max):
                    break
                task = asyncio.create_task(self._guarded(http, number))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval_s)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=REQUEST_TIMEOUT_S + SETTLE_WAIT_MS / 1000)
        return self.stats

    async def _guarded(self, http: aiohttp.ClientSession, number: int) -> None:
        try:
            await self.one_payment(http, number)
        except (aiohttp.ClientError, TimeoutError, DemoLoadError, ValueError):
            self.stats.rejected[0] += 1  # no answer (connection refused, timeout): counted, not fatal
