"""The payment worker's gRPC API (PaymentService and the gateway's PaymentBatchService): SPIFFE allow-list
(only the gateway), no plaintext, health and reflection."""

import json
import os
import subprocess
import sys
from typing import Any

import grpc
import grpc.aio

from payplane.devinfra.local_identity import spawn_identity
from tests.integration.payments.conftest import Rail

CALL_SCRIPT = """
import asyncio, json, sys
import grpc, grpc.aio
from payplane._gen.v1 import payments_pb2 as pb, payments_pb2_grpc as pb_grpc
from payplane.adapters.grpc_mtls import RotatingChannel
from payplane.adapters.svid import SvidSource

async def main():
    with SvidSource(first_svid_timeout_s=40) as source:
        channel = RotatingChannel(source, sys.argv[1])
        stub = pb_grpc.PaymentServiceStub(channel.channel())
        try:
            await stub.GetPayment(pb.GetPaymentRequest(caller=pb.Caller(client_id="x"), payment_id="pay_x"), timeout=10)
            code, details = "OK", ""
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().name, exc.details()
        batch_stub = pb_grpc.PaymentBatchServiceStub(channel.channel())
        caller, key = pb.Caller(client_id="x"), pb.Idempotency(key="k-mtls-1")
        items = [
            pb.CreatePaymentBatchItem(request=pb.CreatePaymentRequest(caller=caller, idempotency=key, amount_minor=0)),
            pb.CreatePaymentBatchItem(request=pb.CreatePaymentRequest(
                caller=caller, idempotency=key, amount_minor=5, currency="EUR",
                source_account_id="acct_nope", destination_account_id="acct_nope2")),
        ]
        try:
            answer = await batch_stub.CreatePayments(pb.CreatePaymentBatch(items=items), timeout=10)
            batch_code = "OK"
            batch_errors = [json.loads(r.error_json)["code"] if r.error_json else "" for r in answer.results]
        except grpc.aio.AioRpcError as exc:
            batch_code, batch_errors = exc.code().name, []
        await channel.close()
        print(json.dumps({"code": code, "details": details, "me": source.material().spiffe_id,
                          "batch_code": batch_code, "batch_errors": batch_errors}))

asyncio.run(main())
"""


def _call_as(rail: Rail, gid: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CALL_SCRIPT, f"localhost:{rail.worker_port}"],
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": rail.spire.endpoint_socket},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        **spawn_identity(gid),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


def test_the_gateway_identity_is_allowed(rail: Rail) -> None:
    answer = _call_as(rail, rail.gateway.gid)
    assert answer["me"] == rail.gateway.spiffe_id
    assert answer["code"] == "NOT_FOUND"  # authorized, and the payment does not exist
    # the batch service (CreatePayment calls in batches): authorized, and each item refused on its own
    assert answer["batch_code"] == "OK"
    assert answer["batch_errors"] == ["amount_invalid", "resource_missing"]


def test_another_workload_is_denied(rail: Rail) -> None:
    answer = _call_as(rail, rail.stranger.gid)
    assert answer["me"] == rail.stranger.spiffe_id
    assert answer["code"] == "PERMISSION_DENIED"
    assert rail.stranger.spiffe_id in answer["details"]
    assert answer["batch_code"] == "PERMISSION_DENIED"


async def test_plaintext_and_certificateless_callers_are_refused(rail: Rail) -> None:
    target = f"localhost:{rail.worker_port}"
    roots_only = grpc.ssl_channel_credentials(root_certificates=rail.spire.cli.bundle_pem().encode())
    for channel in (grpc.aio.insecure_channel(target), grpc.aio.secure_channel(target, roots_only)):
        async with channel:
            try:
                await channel.unary_unary("/grpc.health.v1.Health/Check", None, None)(b"", timeout=10.0)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
        assert code is grpc.StatusCode.UNAVAILABLE
