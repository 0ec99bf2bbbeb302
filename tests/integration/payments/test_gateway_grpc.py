"""The gateway's public gRPC edge: the REST operations over gRPC, API key in metadata, the same stable
error codes (in ``payplane-error`` trailing metadata) mapped to gRPC statuses."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from payplane._gen.v1 import payments_pb2 as pb
from payplane._gen.v1 import payments_pb2_grpc as pb_grpc
from tests.integration.payments.conftest import Client, Rail, wait_ledger_accounts

WAIT_MS = 8000


@pytest.fixture(scope="module")
async def channel(rail: Rail) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(rail.grpc_target) as channel:
        yield channel


def auth(client: Client) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {client.key}"),)


def idem(key: str | None = None) -> pb.Idempotency:
    return pb.Idempotency(key=key or f"grpc-{uuid.uuid4().hex}")


async def refused(call: Any) -> tuple[grpc.StatusCode, dict[str, str]]:
    """Await a call that must fail: its status and the error object from the trailing metadata."""
    failure: grpc.aio.AioRpcError | None = None
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        failure = exc
    assert failure is not None, "the call succeeded"
    errors = [json.loads(v) for k, v in (failure.trailing_metadata() or ()) if k == "payplane-error"]
    assert errors, f"no payplane-error metadata on {failure.code()}: {failure.details()}"
    return failure.code(), errors[0]


async def open_accounts(stub: Any, rail: Rail, client: Client) -> tuple[str, str]:
    md = auth(client)
    source = await stub.CreateAccount(
        pb.CreateAccountRequest(idempotency=idem(), currency="EUR", type="external"), metadata=md
    )
    wallet = await stub.CreateAccount(pb.CreateAccountRequest(idempotency=idem(), currency="EUR"), metadata=md)
    await wait_ledger_accounts(rail, [source.account.id, wallet.account.id])
    return source.account.id, wallet.account.id


async def test_payments_over_grpc_settle_capture_and_refund(rail: Rail, channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.PaymentServiceStub(channel)
    a = rail.clients[0]
    md = auth(a)
    source, wallet = await open_accounts(stub, rail, a)

    created = await stub.CreatePayment(
        pb.CreatePaymentRequest(
            idempotency=idem(),
            amount_minor=1250,
            currency="EUR",
            source_account_id=source,
            destination_account_id=wallet,
        ),
        metadata=md,
    )
    assert created.payment.status == "processing"
    payment = await stub.GetPayment(pb.GetPaymentRequest(payment_id=created.payment.id, wait_ms=WAIT_MS), metadata=md)
    assert (payment.status, payment.captured_minor) == ("succeeded", 1250)
    listing = await stub.ListPayments(pb.ListPaymentsRequest(limit=5), metadata=md)
    assert created.payment.id in [p.id for p in listing.data]
    balance = await stub.GetAccountBalance(pb.GetAccountRequest(account_id=wallet), metadata=md)
    assert balance.posted_minor == 1250

    manual = await stub.CreatePayment(
        pb.CreatePaymentRequest(
            idempotency=idem(),
            amount_minor=900,
            currency="EUR",
            source_account_id=source,
            destination_account_id=wallet,
            capture_method="manual",
        ),
        metadata=md,
    )
    held = await stub.GetPayment(pb.GetPaymentRequest(payment_id=manual.payment.id, wait_ms=WAIT_MS), metadata=md)
    assert held.status == "authorized"
    await stub.CapturePayment(
        pb.CapturePaymentRequest(idempotency=idem(), payment_id=manual.payment.id, amount_minor=400), metadata=md
    )
    captured = await stub.GetPayment(pb.GetPaymentRequest(payment_id=manual.payment.id, wait_ms=WAIT_MS), metadata=md)
    assert (captured.status, captured.captured_minor) == ("succeeded", 400)
    refund = await stub.CreateRefund(
        pb.CreateRefundRequest(idempotency=idem(), payment_id=manual.payment.id, amount_minor=150), metadata=md
    )
    assert (refund.refund.amount_minor, refund.refund.status) == (150, "pending")
    canceled = await refused(
        stub.CancelPayment(pb.CancelPaymentRequest(idempotency=idem(), payment_id=manual.payment.id), metadata=md)
    )
    assert canceled == (
        grpc.StatusCode.FAILED_PRECONDITION,
        {**canceled[1], "code": "payment_state_invalid", "type": "invalid_request_error"},
    )


async def test_idempotency_over_grpc(rail: Rail, channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.PaymentServiceStub(channel)
    a = rail.clients[0]
    source, wallet = await open_accounts(stub, rail, a)
    request = pb.CreatePaymentRequest(
        idempotency=idem(), amount_minor=30, currency="EUR", source_account_id=source, destination_account_id=wallet
    )
    first = await stub.CreatePayment(request, metadata=auth(a))
    again = await stub.CreatePayment(request, metadata=auth(a))
    assert (again.payment.id, first.replayed, again.replayed) == (first.payment.id, False, True)
    other = pb.CreatePaymentRequest()
    other.CopyFrom(request)
    other.amount_minor = 31
    code, error = await refused(stub.CreatePayment(other, metadata=auth(a)))
    assert (code, error["code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_reused")
    # a fingerprint sent by the client is ignored: it cannot make another body look like the first
    forged = pb.CreatePaymentRequest()
    forged.CopyFrom(other)
    forged.idempotency.fingerprint = "0" * 64
    code, error = await refused(stub.CreatePayment(forged, metadata=auth(a)))
    assert error["code"] == "idempotency_key_reused"


async def test_auth_tenancy_and_bad_input_map_to_grpc_statuses(rail: Rail, channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.PaymentServiceStub(channel)
    a, b = rail.clients
    source, wallet = await open_accounts(stub, rail, a)
    created = await stub.CreatePayment(
        pb.CreatePaymentRequest(
            idempotency=idem(), amount_minor=5, currency="EUR", source_account_id=source, destination_account_id=wallet
        ),
        metadata=auth(a),
    )
    get_a = pb.GetPaymentRequest(payment_id=created.payment.id)
    cases: list[tuple[Any, grpc.StatusCode, str]] = [
        (stub.GetPayment(get_a), grpc.StatusCode.UNAUTHENTICATED, "api_key_missing"),
        (
            stub.GetPayment(get_a, metadata=(("authorization", "Bearer sk_no_no"),)),
            grpc.StatusCode.UNAUTHENTICATED,
            "api_key_invalid",
        ),
        (stub.GetPayment(get_a, metadata=auth(b)), grpc.StatusCode.NOT_FOUND, "resource_missing"),
        # claiming to be another client changes nothing: the caller is the API key's client
        (
            stub.GetPayment(
                pb.GetPaymentRequest(caller=pb.Caller(client_id=a.id), payment_id=created.payment.id), metadata=auth(b)
            ),
            grpc.StatusCode.NOT_FOUND,
            "resource_missing",
        ),
        (
            stub.CreatePayment(
                pb.CreatePaymentRequest(
                    amount_minor=5, currency="EUR", source_account_id=source, destination_account_id=wallet
                ),
                metadata=auth(a),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "idempotency_key_missing",
        ),
        (
            stub.CreatePayment(
                pb.CreatePaymentRequest(
                    idempotency=idem(),
                    amount_minor=-5,
                    currency="EUR",
                    source_account_id=source,
                    destination_account_id=wallet,
                ),
                metadata=auth(a),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "amount_invalid",
        ),
        (
            stub.CreatePayment(
                pb.CreatePaymentRequest(
                    idempotency=idem(),
                    amount_minor=5,
                    currency="XYZ",
                    source_account_id=source,
                    destination_account_id=wallet,
                ),
                metadata=auth(a),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "currency_invalid",
        ),
        (
            stub.CreateAccount(
                pb.CreateAccountRequest(idempotency=idem(), currency="EUR", description="x" * 501), metadata=auth(a)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter_invalid",
        ),
        (
            stub.ListPayments(pb.ListPaymentsRequest(limit=101), metadata=auth(a)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter_invalid",
        ),
        (
            stub.GetPayment(pb.GetPaymentRequest(payment_id=created.payment.id, wait_ms=-1), metadata=auth(a)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter_invalid",
        ),
    ]
    cases += [  # the review desk is for admin keys only, over gRPC as over REST
        (
            stub.ListReviews(pb.ListPaymentsRequest(), metadata=auth(a)),
            grpc.StatusCode.PERMISSION_DENIED,
            "admin_required",
        ),
        (
            stub.ApprovePayment(
                pb.ReviewPaymentRequest(idempotency=idem(), payment_id=created.payment.id), metadata=auth(a)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "admin_required",
        ),
    ]
    for call, expected_status, expected_code in cases:
        status, error = await refused(call)
        assert (status, error["code"]) == (expected_status, expected_code), error


async def test_health_and_reflection_are_served(rail: Rail, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="payplane.v1.PaymentService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.done_writing()
    assert "payplane.v1.PaymentService" in [s.name for s in listed.list_services_response.service]
