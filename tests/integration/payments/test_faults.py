"""The payment path under faults, on real infrastructure, each test with a rail of its own.

Nothing shared is stopped: Kafka faults use a private broker (the devinfra component on other ports
and another state directory), PostgreSQL and Redis faults cut a ``PartitionableProxy`` that only this
rail's processes go through, and process crashes are SIGKILLs of this rail's gateway and worker.
Every test ends with ``assert_exactly_once_and_settled``: each accepted payment exists once, nothing
exists for a key that was never accepted, all are terminal, the ledger holds them once and verifies.
"""

import asyncio
import contextlib
import dataclasses
import random
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from payplane.devinfra.components.kafka import Kafka
from payplane.devinfra.settings import Ports
from tests.integration.conftest import Infra
from tests.integration.payments.fault_checks import (
    PayingClient,
    assert_exactly_once_and_settled,
    new_key,
)
from tests.integration.payments.rail_stack import Procs, RailStack, rail_stack
from tests.integration.test_spire import Spire
from tests.tcp_proxy import PartitionableProxy

ACCEPT_S = 60.0  # how long a client keeps retrying one payment


@pytest.fixture
def fault_procs() -> Iterator[Procs]:
    procs = Procs()
    yield procs
    procs.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _free_port_base() -> int:
    """A port base whose Kafka ports (base+92, base+93) are free on 127.0.0.1, below the ephemeral range
    (so no outgoing connection takes them between this probe and the broker's start)."""
    for _ in range(50):
        base = random.randrange(20_000, 32_000, 100)
        ports = Ports(base)
        with contextlib.ExitStack() as stack:
            try:
                for port in (ports.kafka, ports.kafka_controller):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise AssertionError("no free port base for a private Kafka")


@pytest.fixture
def private_kafka(infra: Infra) -> Iterator[Kafka]:
    """A Kafka broker of this test's own (same jars, another state directory and ports)."""
    with tempfile.TemporaryDirectory(prefix="payplane-kafka-") as state_dir:
        settings = dataclasses.replace(infra.settings, state_dir=Path(state_dir), ports=Ports(_free_port_base()))
        kafka = Kafka(settings)
        kafka.up()  # a failure names the broker's log and its last lines
        try:
            yield kafka
        finally:
            kafka.down()


def _proxied_dsn(dsn: str, proxy: PartitionableProxy) -> str:
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _proxied_redis(url: str, proxy: PartitionableProxy) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))


async def _proxy_to(url: str) -> PartitionableProxy:
    parts = urlsplit(url)
    proxy = PartitionableProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    await proxy.start()
    return proxy


def _stack(
    infra: Infra, spire: Spire, procs: Procs, *, bootstrap: str = "", redis_url: str = ""
) -> AbstractAsyncContextManager[RailStack]:
    return rail_stack(
        spire=spire,
        procs=procs,
        postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
        bootstrap=bootstrap or infra["KAFKA_BOOTSTRAP"],
        redis_url=redis_url or infra["PAYPLANE_REDIS_URL"],
    )


async def _pay_many(payer: PayingClient, source: str, wallet: str, count: int) -> set[str]:
    keys = {new_key() for _ in range(count)}
    deadline = time.monotonic() + ACCEPT_S
    await asyncio.gather(*(payer.pay(source, wallet, random.randint(1, 999), k, deadline) for k in keys))
    return keys


async def _pay_until(payer: PayingClient, source: str, wallet: str, stop: asyncio.Event, lanes: int) -> set[str]:
    """``lanes`` clients paying one payment after another (each retried with its key) until ``stop``."""
    tried: set[str] = set()

    async def lane() -> None:
        while not stop.is_set():
            key = new_key()
            tried.add(key)
            await payer.pay(source, wallet, random.randint(1, 999), key, time.monotonic() + ACCEPT_S)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return tried


async def test_kafka_down_payments_are_accepted_then_flow_when_it_returns(
    infra: Infra, spire: Spire, fault_procs: Procs, http: aiohttp.ClientSession, private_kafka: Kafka
) -> None:
    bootstrap = private_kafka.endpoints()["KAFKA_BOOTSTRAP"]
    async with _stack(infra, spire, fault_procs, bootstrap=bootstrap) as stack:
        stack.spawn_writer()
        worker, worker_port = await asyncio.to_thread(stack.spawn_worker)
        _, gateway_port = await asyncio.to_thread(stack.spawn_gateway, worker_port)
        payer = PayingClient(http, stack.clients[0], f"http://127.0.0.1:{gateway_port}")
        source, wallet = await payer.open_accounts(stack.ledger_dsn)
        before = await _pay_many(payer, source, wallet, 5)

        await asyncio.to_thread(private_kafka.down)
        # a worker that starts during the outage must settle its payments once Kafka is back
        worker.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.wait)
        await asyncio.to_thread(stack.spawn_worker, PAYPLANE_GRPC_PORT=str(worker_port))
        # accepted while Kafka is down (the outbox holds them); retried with their keys while the gateway
        # reconnects to the restarted worker
        during = await _pay_many(payer, source, wallet, 30)
        assert set(payer.accepted) >= during, "a payment was not accepted while Kafka was down"
        conn = await asyncpg.connect(stack.payments_dsn)
        try:
            held = await conn.fetchval("select count(*) from outbox")
        finally:
            await conn.close()
        assert held >= len(during), "the outbox should hold the commands while Kafka is down"
        await asyncio.sleep(3)  # the relay and the consumers retry against a missing broker meanwhile

        await asyncio.to_thread(private_kafka.up)
        await assert_exactly_once_and_settled(
            stack.payments_dsn, stack.ledger_dsn, payer.accepted, before | during, wallet
        )


async def test_redis_down_payments_go_through_postgresql_and_stay_exactly_once(
    infra: Infra, spire: Spire, fault_procs: Procs, http: aiohttp.ClientSession
) -> None:
    proxy = await _proxy_to(infra["PAYPLANE_REDIS_URL"])
    try:
        redis_url = _proxied_redis(infra["PAYPLANE_REDIS_URL"], proxy)
        async with _stack(infra, spire, fault_procs, redis_url=redis_url) as stack:
            stack.gateway_env = {"PAYPLANE_RATE_PER_S": "5", "PAYPLANE_RATE_BURST": "5"}
            stack.spawn_writer()
            _, worker_port = await asyncio.to_thread(stack.spawn_worker)
            _, gateway_port = await asyncio.to_thread(stack.spawn_gateway, worker_port)
            base_url = f"http://127.0.0.1:{gateway_port}"
            payer = PayingClient(http, stack.clients[0], base_url)
            prober = PayingClient(http, stack.clients[1], base_url)
            source, wallet = await payer.open_accounts(stack.ledger_dsn)

            assert 429 in await _burst_statuses(prober, 20), "with Redis up, the burst must be rate-limited"

            proxy.cut()
            tried = await _pay_many(payer, source, wallet, 20)
            # the same key, concurrently and again after: one payment (PostgreSQL's unique key decides)
            key = new_key()
            tried.add(key)
            body = {"amount": 7, "currency": "EUR", "source": source, "destination": wallet, "description": key}
            answers = await asyncio.gather(*(payer.post("/v1/payments", body, key) for _ in range(10)))
            assert {status for status, _ in answers} == {200}, answers
            assert len({answer["id"] for _, answer in answers}) == 1
            payer.accepted[key] = answers[0][1]["id"]
            status, other = await payer.post("/v1/payments", {**body, "amount": 8}, key)
            assert (status, other["error"]["code"]) == (422, "idempotency_key_reused")
            # rate limiting degrades open, as docs/api.md says
            assert set(await _burst_statuses(prober, 20)) == {200}

            proxy.heal()
            await asyncio.sleep(1.5)  # past the 1 s during which the gateway skips Redis after a failure
            assert 429 in await _burst_statuses(prober, 20), "rate limiting must return with Redis"
            await assert_exactly_once_and_settled(stack.payments_dsn, stack.ledger_dsn, payer.accepted, tried, wallet)
    finally:
        await proxy.stop()


async def _burst_statuses(prober: PayingClient, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with prober.http.get(prober.base_url + "/v1/payments?limit=1", headers=prober.headers()) as response:
            statuses.append(response.status)
    return statuses


async def test_postgres_down_for_the_worker_gives_503_and_writes_nothing(
    infra: Infra, spire: Spire, fault_procs: Procs, http: aiohttp.ClientSession
) -> None:
    proxy = await _proxy_to(infra["PAYPLANE_POSTGRES_DSN"])
    try:
        async with _stack(infra, spire, fault_procs) as stack:
            stack.spawn_writer()
            proxied = _proxied_dsn(stack.payments_dsn, proxy)  # the worker's and the gateway's (API keys)
            _, worker_port = await asyncio.to_thread(stack.spawn_worker, PAYPLANE_PAYMENTS_DSN=proxied)
            _, gateway_port = await asyncio.to_thread(stack.spawn_gateway, worker_port, PAYPLANE_PAYMENTS_DSN=proxied)
            payer = PayingClient(http, stack.clients[0], f"http://127.0.0.1:{gateway_port}")
            source, wallet = await payer.open_accounts(stack.ledger_dsn)
            tried = await _pay_many(payer, source, wallet, 5)

            proxy.cut()
            refused: dict[str, dict[str, object]] = {}
            for i in range(10):
                key = new_key()
                tried.add(key)
                body = {"amount": 100 + i, "currency": "EUR", "source": source, "destination": wallet}
                refused[key] = {**body, "description": key}
                status, answer = await payer.post("/v1/payments", refused[key], key)
                assert status == 503, answer
                assert answer["error"]["code"] == "service_unavailable"
                assert answer["error"]["type"] == "api_error"
            async with http.get(
                payer.base_url + f"/v1/payments/{next(iter(payer.accepted.values()))}", headers=payer.headers()
            ) as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "service_unavailable"
            # a client whose key the gateway has not seen yet: the key cannot be checked, 503 as well
            newcomer = PayingClient(http, stack.clients[1], payer.base_url)
            for path in ("/v1/payments", "/v1/payments?limit=1"):
                async with http.get(payer.base_url + path, headers=newcomer.headers()) as response:
                    assert response.status == 503, await response.text()
                    assert (await response.json())["error"]["code"] == "service_unavailable"

            conn = await asyncpg.connect(stack.payments_dsn)  # directly, not through the cut proxy
            try:
                written = await conn.fetchval(
                    "select count(*) from payments where description = any($1::text[])", list(refused)
                )
                claimed = await conn.fetchval(
                    "select count(*) from idempotency_keys where key = any($1::text[])", list(refused)
                )
            finally:
                await conn.close()
            assert (written, claimed) == (0, 0), "a refused request left a payment or a claimed key behind"

            proxy.heal()
            # what a PostgreSQL restart does to open sessions: every backend of the rail's database ends
            # ("terminating connection due to administrator command"); answers are 200 or 503, never 500
            for _ in range(100):  # once the worker has sessions again
                if (await _list(payer))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            await _terminate_backends(infra["PAYPLANE_POSTGRES_DSN"], stack.payments_dsn)
            answers = await asyncio.gather(*(_list(payer) for _ in range(20)))
            assert {status for status, _ in answers} <= {200, 503}, (answers, fault_procs.log_dir)
            deadline = time.monotonic() + ACCEPT_S
            for key, body in refused.items():  # the same keys and bodies now succeed, exactly once
                assert await payer.pay(source, wallet, int(str(body["amount"])), key, deadline)
                status, again = await payer.post("/v1/payments", body, key)
                assert (status, again["id"]) == (200, payer.accepted[key])
            await assert_exactly_once_and_settled(stack.payments_dsn, stack.ledger_dsn, payer.accepted, tried, wallet)
    finally:
        await proxy.stop()


async def _terminate_backends(admin_dsn: str, database_dsn: str) -> None:
    database = urlsplit(database_dsn).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        ended = await admin.fetchval(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1", database
        )
    finally:
        await admin.close()
    assert ended > 0, "no session of the rail's database to end"


async def _list(payer: PayingClient) -> tuple[int, dict[str, object]]:
    async with payer.http.get(payer.base_url + "/v1/payments?limit=1", headers=payer.headers()) as response:
        return response.status, await response.json()


async def test_sigkill_of_worker_and_gateway_under_load_loses_and_duplicates_nothing(
    infra: Infra, spire: Spire, fault_procs: Procs, http: aiohttp.ClientSession
) -> None:
    async with _stack(infra, spire, fault_procs) as stack:
        stack.spawn_writer()
        worker, worker_port = await asyncio.to_thread(stack.spawn_worker)
        gateway, gateway_port = await asyncio.to_thread(stack.spawn_gateway, worker_port)
        payer = PayingClient(http, stack.clients[0], f"http://127.0.0.1:{gateway_port}")
        source, wallet = await payer.open_accounts(stack.ledger_dsn)

        stop = asyncio.Event()

        async def crash() -> None:
            await asyncio.sleep(1.0)
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait)
            await asyncio.to_thread(stack.spawn_worker, PAYPLANE_GRPC_PORT=str(worker_port))
            await asyncio.sleep(1.5)
            gateway.send_signal(signal.SIGKILL)
            await asyncio.to_thread(gateway.wait)
            await asyncio.to_thread(stack.spawn_gateway, worker_port, PAYPLANE_HTTP_PORT=str(gateway_port))
            await asyncio.sleep(1.5)
            stop.set()

        tried, _ = await asyncio.gather(_pay_until(payer, source, wallet, stop, lanes=16), crash())

        assert len(tried) >= 100, f"too little load to mean anything: {len(tried)} payments, {payer.answers}"
        assert set(payer.accepted) == tried, f"{len(tried) - len(payer.accepted)} payments never accepted"
        assert payer.answers.get(0, 0) + payer.answers.get(503, 0) > 0, f"no request met a crash: {payer.answers}"
        assert payer.answers.get(500, 0) == 0, payer.bodies[:3]
        await assert_exactly_once_and_settled(stack.payments_dsn, stack.ledger_dsn, payer.accepted, tried, wallet)
