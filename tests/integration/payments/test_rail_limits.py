"""A rail's limits as the operator writes them reach the running gateway and worker: the limit variables
of the operator's own gateway and worker environments (``payplane_operator.desired.workloads``, whose
mapping onto ``config_from_env`` is unit-tested in ``tests/unit/operator/test_desired.py``) are given to
real processes, and the limits show in behaviour: amounts outside the rail's range are refused as client
errors (400 over REST, INVALID_ARGUMENT over gRPC, never a fraud decline), a body over the rail's size
limit gets 413, the rate limit answers 429 with Retry-After past the burst, idempotency keys are kept for
the rail's retention."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import grpc
import grpc.aio
import pytest

from payplane._gen.v1 import payments_pb2 as pb
from payplane._gen.v1 import payments_pb2_grpc as pb_grpc
from payplane_operator.api.v1alpha1 import parse_rail
from payplane_operator.desired.workloads import gateway_env, worker_env
from tests.integration.conftest import Infra
from tests.integration.payments.fault_checks import PayingClient, new_key
from tests.integration.payments.rail_stack import Procs, rail_stack
from tests.integration.test_spire import Spire
from tests.operator_support import TRUST_DOMAIN, body, rail_spec

LIMIT_VARIABLES = frozenset(
    {
        "PAYPLANE_RATE_PER_S",
        "PAYPLANE_RATE_BURST",
        "PAYPLANE_IDEMPOTENCY_RETENTION_S",
        "PAYPLANE_AMOUNT_MIN_MINOR",
        "PAYPLANE_AMOUNT_MAX_MINOR",
        "PAYPLANE_BODY_BYTES_MAX",
    }
)
BODY_BYTES_MAX = 4096
RATE_LIMIT_WAIT_S = 1.5  # at 5 requests/s a refused client may send again within 0.2 s
RAIL = parse_rail(
    body(
        "PaymentRail",
        "limits",
        rail_spec(
            amountLimits={"minMinor": 50, "maxMinor": 5000},
            rateLimits={"requestsPerSecond": 5, "burst": 12},
            idempotency={"retention": "2h"},
            gateway={"requestBodyMaxBytes": BODY_BYTES_MAX},
        ),
    )
)


async def _grpc_refusals(
    grpc_port: int, payer: PayingClient, source: str, wallet: str
) -> dict[int, tuple[grpc.StatusCode, str, str]]:
    """What the gateway's public gRPC edge answers for amounts outside the rail's range."""
    refusals = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.PaymentServiceStub(channel)
        for amount in (49, 5001):
            request = pb.CreatePaymentRequest(
                idempotency=pb.Idempotency(key=new_key()),
                amount_minor=amount,
                currency="EUR",
                source_account_id=source,
                destination_account_id=wallet,
            )
            try:
                await stub.CreatePayment(request, metadata=(("authorization", payer.headers()["Authorization"]),))
            except grpc.aio.AioRpcError as exc:
                (error,) = [json.loads(v) for k, v in exc.trailing_metadata() or () if k == "payplane-error"]
                refusals[amount] = (exc.code(), error["code"], error.get("param", ""))
    return refusals


def _limits(env: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env if e["name"] in LIMIT_VARIABLES}


@pytest.fixture
def limits_procs() -> Iterator[Procs]:
    procs = Procs()
    yield procs
    procs.stop_all()


async def test_the_rails_limits_as_the_operator_writes_them_are_enforced(
    infra: Infra, spire: Spire, limits_procs: Procs
) -> None:
    gateway_limits = _limits(gateway_env(RAIL))
    worker_limits = _limits(worker_env(RAIL, kafka_bootstrap="unused", trust_domain=TRUST_DOMAIN))
    assert set(gateway_limits) | set(worker_limits) == LIMIT_VARIABLES, "the operator stopped writing a limit"
    async with (
        rail_stack(
            spire=spire,
            procs=limits_procs,
            postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
            bootstrap=infra["KAFKA_BOOTSTRAP"],
            redis_url=infra["PAYPLANE_REDIS_URL"],
            prefix="lim",
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        stack.worker_env, stack.gateway_env = worker_limits, gateway_limits
        stack.spawn_writer()
        _, worker_port = stack.spawn_worker()
        _, gateway_port = stack.spawn_gateway(worker_port)
        payer = PayingClient(http, stack.clients[0], f"http://127.0.0.1:{gateway_port}")
        source, wallet = await payer.open_accounts(stack.ledger_dsn)

        outcomes: dict[int, Any] = {}
        for amount in (49, 50, 5000, 5001):
            key = new_key()
            status, created = await payer.post(
                "/v1/payments", {"amount": amount, "currency": "EUR", "source": source, "destination": wallet}, key
            )
            if status != 200:
                outcomes[amount] = (status, created["error"]["code"], created["error"].get("param"))
                continue
            async with http.get(
                f"{payer.base_url}/v1/payments/{created['id']}?wait_ms=8000", headers=payer.headers()
            ) as response:
                payment = await response.json()
            outcomes[amount] = (payment["status"], payment["failure_code"])
        assert outcomes == {
            49: (400, "amount_too_small", "amount"),
            50: ("succeeded", None),
            5000: ("succeeded", None),
            5001: (400, "amount_too_large", "amount"),
        }
        assert await _grpc_refusals(stack.gateway_grpc_port, payer, source, wallet) == {
            49: (grpc.StatusCode.INVALID_ARGUMENT, "amount_too_small", "amount"),
            5001: (grpc.StatusCode.INVALID_ARGUMENT, "amount_too_large", "amount"),
        }

        # the rail's body limit: a body of exactly the limit is served, one byte more is 413
        payload = json.dumps({"amount": 60, "currency": "EUR", "source": source, "destination": wallet})
        for size, expected in ((BODY_BYTES_MAX, 200), (BODY_BYTES_MAX + 1, 413)):
            padded = payload[:-1] + " " * (size - len(payload)) + "}"  # JSON whitespace: the same request
            headers = {**payer.headers(), "Idempotency-Key": new_key(), "Content-Type": "application/json"}
            async with http.post(f"{payer.base_url}/v1/payments", data=padded.encode(), headers=headers) as response:
                answer = await response.json()
                assert response.status == expected, (size, answer)
        assert answer == {
            "error": {
                "type": "invalid_request_error",
                "code": "body_too_large",
                "message": f"the request body exceeds {BODY_BYTES_MAX} bytes",
            }
        }

        conn = await asyncpg.connect(stack.payments_dsn)
        try:
            kept_s = await conn.fetchval(
                "select extract(epoch from max(expires_at - created_at)) from idempotency_keys"
            )
        finally:
            await conn.close()
        assert abs(float(kept_s) - 2 * 3600) < 60, f"keys are kept {kept_s} s, the rail says 2 h"

        prober = PayingClient(http, stack.clients[1], payer.base_url)
        statuses, retry_after = [], []
        for _ in range(30):
            async with http.get(f"{payer.base_url}/v1/payments?limit=1", headers=prober.headers()) as response:
                statuses.append(response.status)
                retry_after.append(response.headers.get("Retry-After"))
        allowed = statuses.count(200)
        assert 12 <= allowed < 20, f"burst 12 at 5/s: {statuses}"
        assert set(statuses) == {200, 429}
        assert all(r is not None and int(r) >= 1 for s, r in zip(statuses, retry_after, strict=True) if s == 429)

        await _payments_past_the_burst_get_429_and_leave_no_trace(payer, stack.payments_dsn, source, wallet)


async def _payments_past_the_burst_get_429_and_leave_no_trace(
    payer: PayingClient, payments_dsn: str, source: str, wallet: str
) -> None:
    """Concurrent POST /v1/payments share one batch, whose one Redis round trip checks each request's rate
    and takes its key's lease: past the burst, 429 with Retry-After, no payment and no lease, so the same
    key succeeds once the client waited."""
    body = {"amount": 100, "currency": "EUR", "source": source, "destination": wallet}
    keys = [new_key() for _ in range(30)]
    answers = await asyncio.gather(*(payer.post("/v1/payments", body, key) for key in keys))
    statuses = [status for status, _ in answers]
    assert set(statuses) == {200, 429}, statuses
    refused = [key for key, (status, _) in zip(keys, answers, strict=True) if status == 429]
    assert all(answer["error"]["code"] == "rate_limited" for status, answer in answers if status == 429)
    conn = await asyncpg.connect(payments_dsn)
    try:
        stored_keys = {
            row["key"] for row in await conn.fetch("select key from idempotency_keys where key = any($1)", keys)
        }
    finally:
        await conn.close()
    assert stored_keys == set(keys) - set(refused)
    await asyncio.sleep(RATE_LIMIT_WAIT_S)
    status, created = await payer.post("/v1/payments", body, refused[0])
    assert status == 200, created
