"""Trace context along the real payment path: a client's ``traceparent`` (HTTP header or gRPC metadata at
the gateway; or one the gateway starts) names the same trace in the gateway's (at debug level) and the
worker's JSON log lines for the payment, and travels with the ledger command to Kafka as its ``traceparent`` header."""

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import grpc
import grpc.aio
from aiokafka import AIOKafkaConsumer

from payplane._gen.v1 import payments_pb2 as pb
from payplane._gen.v1 import payments_pb2_grpc as pb_grpc
from payplane.platform.tracing import parse_traceparent
from tests.integration.conftest import Infra
from tests.integration.payments.conftest import Procs, Rail, wait_ledger_accounts

TRACE_ID = uuid.uuid4().hex
LOG_TIMEOUT_S = 30.0


async def _accounts(http: aiohttp.ClientSession, rail: Rail) -> tuple[str, str]:
    client = rail.clients[0]
    ids = []
    for account_type in ("external", "wallet"):
        async with http.post(
            rail.base_url + "/v1/accounts",
            json={"currency": "EUR", "type": account_type},
            headers=rail.headers(client, uuid.uuid4().hex),
        ) as response:
            assert response.status == 200, await response.text()
            ids.append((await response.json())["id"])
    await wait_ledger_accounts(rail, ids)
    return ids[0], ids[1]


async def _pay(http: aiohttp.ClientSession, rail: Rail, source: str, wallet: str, traceparent: str | None) -> str:
    headers = rail.headers(rail.clients[0], uuid.uuid4().hex)
    if traceparent is not None:
        headers["traceparent"] = traceparent
    body = {"amount": 700, "currency": "EUR", "source": source, "destination": wallet}
    async with http.post(rail.base_url + "/v1/payments", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        payment_id: str = (await response.json())["id"]
    async with http.get(
        f"{rail.base_url}/v1/payments/{payment_id}?wait_ms=8000", headers=rail.headers(rail.clients[0])
    ) as response:
        assert (await response.json())["status"] == "succeeded"
    return payment_id


def _lines(procs: Procs, role: str, payment_id: str) -> list[dict[str, Any]]:
    found = []
    for path in procs.log_dir.glob(f"{role}-*.log"):
        for text in path.read_text(errors="replace").splitlines():
            if payment_id in text:
                found.append(json.loads(text))
    return found


async def _trace_ids_in_logs(procs: Procs, role: str, payment_id: str, expected_lines: int) -> set[str]:
    """The trace ids of ``role``'s log lines about the payment, once ``expected_lines`` were written."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        lines = _lines(procs, role, payment_id)
        if len(lines) >= expected_lines or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(lines) >= expected_lines, f"{role} wrote {lines} about {payment_id}"
    assert all(line["payment_id"] == payment_id for line in lines)
    return {line.get("trace_id", "") for line in lines}


async def test_a_clients_trace_id_is_in_gateway_and_worker_logs(
    http: aiohttp.ClientSession, rail: Rail, procs: Procs
) -> None:
    source, wallet = await _accounts(http, rail)
    payment_id = await _pay(http, rail, source, wallet, f"00-{TRACE_ID}-00f067aa0ba902b7-01")

    assert await _trace_ids_in_logs(procs, "gateway", payment_id, 1) == {TRACE_ID}
    # accepted, then settled (written by the ledger-outcome consumer, outside the request)
    assert await _trace_ids_in_logs(procs, "payment-worker", payment_id, 2) == {TRACE_ID}


async def test_without_a_traceparent_the_gateway_starts_one_trace(
    http: aiohttp.ClientSession, rail: Rail, procs: Procs
) -> None:
    source, wallet = await _accounts(http, rail)
    payment_id = await _pay(http, rail, source, wallet, "not-a-traceparent")

    gateway_ids = await _trace_ids_in_logs(procs, "gateway", payment_id, 1)
    assert len(gateway_ids) == 1
    assert len(next(iter(gateway_ids))) == 32
    assert await _trace_ids_in_logs(procs, "payment-worker", payment_id, 2) == gateway_ids


async def test_the_gateways_grpc_edge_continues_the_trace(
    http: aiohttp.ClientSession, rail: Rail, procs: Procs
) -> None:
    source, wallet = await _accounts(http, rail)
    trace_id = uuid.uuid4().hex
    metadata = (
        ("authorization", f"Bearer {rail.clients[0].key}"),
        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
    )
    request = pb.CreatePaymentRequest(
        idempotency=pb.Idempotency(key=uuid.uuid4().hex),
        amount_minor=300,
        currency="EUR",
        source_account_id=source,
        destination_account_id=wallet,
    )
    async with grpc.aio.insecure_channel(rail.grpc_target) as channel:
        created = await pb_grpc.PaymentServiceStub(channel).CreatePayment(request, metadata=metadata, timeout=30)
    assert await _trace_ids_in_logs(procs, "payment-worker", created.payment.id, 2) == {trace_id}


async def test_the_ledger_command_carries_the_trace(http: aiohttp.ClientSession, rail: Rail, infra: Infra) -> None:
    source, wallet = await _accounts(http, rail)
    trace_id = uuid.uuid4().hex
    payment_id = await _pay(http, rail, source, wallet, f"00-{trace_id}-00f067aa0ba902b7-01")

    consumer = AIOKafkaConsumer(
        rail.topics.ledger_commands, bootstrap_servers=infra["KAFKA_BOOTSTRAP"], auto_offset_reset="earliest"
    )
    await consumer.start()
    headers: dict[str, bytes] | None = None
    try:
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while headers is None and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    # the payment worker's command (the ledger writer forwards credit legs on this topic too)
                    from_worker = dict(record.headers)["event_id"].startswith(f"{rail.name}-payments:".encode())
                    if from_worker and payment_id.encode() in (record.value or b""):
                        headers = dict(record.headers)
    finally:
        await consumer.stop()
    assert headers is not None, f"no ledger command for {payment_id} on {rail.topics.ledger_commands}"
    context = parse_traceparent(headers["traceparent"].decode())
    assert context is not None
    assert context.trace_id == trace_id
    assert context.span_id != "00f067aa0ba902b7"  # the worker's span, a child of the client's
