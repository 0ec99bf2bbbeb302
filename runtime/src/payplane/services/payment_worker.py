"""``payplane payment-worker``: the payment service over SPIFFE-mTLS gRPC and the idempotency-key cleanup,
configured from the environment; and, unless ``payplane payment-settler`` runs beside it, what settles the
payments (the outbox relay and the consumer of ledger outcomes).

Environment: PAYPLANE_PAYMENTS_DSN (the rail's payments database, migrated on start), KAFKA_BOOTSTRAP,
PAYPLANE_RAIL, PAYPLANE_LEDGER_PARTITION_COUNT, PAYPLANE_REDIS_URL (optional: the idempotency fast
path), PAYPLANE_ALLOWED_CALLERS (comma-separated SPIFFE IDs: the gateway, admin tooling),
PAYPLANE_GRPC_PORT (default 0: any free port, printed as ``LISTENING <port>``),
PAYPLANE_LEDGER_DSNS (the rail's shard databases, read for balances: one per line, or comma-separated
on a single line), PAYPLANE_IDEMPOTENCY_RETENTION_S (default 86400), PAYPLANE_AMOUNT_MIN_MINOR /
PAYPLANE_AMOUNT_MAX_MINOR (the rail's amount limits: outside them a payment is refused with 400
``amount_too_small`` / ``amount_too_large``), PAYPLANE_REVIEW_AT_MINOR (the default fraud policy's review
threshold), PAYPLANE_FRAUD_POLICY_FILE (the FraudPolicy the operator delivers, ``fraud-policy.json``;
watched and reloaded while serving; unset or absent: the default policy only), PAYPLANE_METRICS_PORT
(serve /metrics and GET /status; 0 or unset: off), PAYPLANE_BIND_ADDRESS
(the address gRPC and metrics listen on, default 127.0.0.1; a Deployment sets the pod's IP),
SPIFFE_ENDPOINT_SOCKET (the SPIRE agent), PAYPLANE_SETTLEMENT (``in-process``, the default: this
process also relays the outbox and applies ledger outcomes; ``separate``: ``payplane payment-settler``
does, beside it, as in the operator's pods). There is no plaintext mode.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg
import grpc
import grpc.aio
from asyncpg.exceptions import InternalClientError
from google.protobuf.message import Message
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from payplane._gen.v1 import payments_pb2 as pb
from payplane._gen.v1 import payments_pb2_grpc as pb_grpc
from payplane.adapters import ledger_queries
from payplane.adapters.grpc_mtls import CallerAllowList, server_credentials
from payplane.adapters.payments_store import (
    CLEANUP_BATCH_MAX,
    MIGRATIONS_PACKAGE,
    Conn,
    IdempotencyClaim,
    PaymentsStore,
    is_transient,
    replay_or_refuse,
)
from payplane.adapters.policy_file import PolicyFile
from payplane.adapters.postgres_migrations import migrate_database
from payplane.adapters.redis_edge import Lease, LeaseState, RedisEdge, lease_name
from payplane.adapters.svid import SvidSource
from payplane.ledger.model import AMOUNT_MAX_MINOR
from payplane.payments.errors import ApiError
from payplane.payments.fraud import FraudPolicy, PaymentFacts, ReviewThresholdPolicy
from payplane.payments.idempotency import DEFAULT_RETENTION_S, IdempotencyKeyError, validate_key
from payplane.payments.ledger_ops import AccountType, OpKind
from payplane.payments.limits import AmountLimits
from payplane.payments.state_machine import CaptureMethod, PaymentStatus
from payplane.platform.metrics import PaymentWorkerMetrics
from payplane.platform.tracing import TRACEPARENT_HEADER, continue_or_start, current_trace, current_traceparent
from payplane.services.entry import ConfigError, serve_from_env, stop_when_a_task_dies
from payplane.services.payment_settler import Settlement, settles_in_process
from payplane_contracts.currencies import MINOR_UNIT_EXPONENT
from payplane_contracts.topics import RailTopics

log = logging.getLogger("payplane.payment_worker")

SERVICE_NAME: Final = "payplane.v1.PaymentService"
BATCH_SERVICE_NAME: Final = "payplane.v1.PaymentBatchService"
ERROR_METADATA_KEY: Final = "payplane-error"
WAIT_MS_MAX: Final = 10_000
WAIT_POLL_S: Final = 0.02
LIST_LIMIT_MAX: Final = 100
CLEANUP_INTERVAL_S: Final = 60.0
CLEANUP_PAUSE_S: Final = 0.05  # between two full cleanup batches (up to 40,000 rows a second)
LEDGER_CONNECT_TIMEOUT_S: Final = 5.0  # a balance read from an unreachable shard answers 503 within the RPC timeout
ResponseT = TypeVar("ResponseT", bound=Message)
# InternalClientError: a session ended under a running statement ("another operation is in progress")
OUTAGE_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError, TimeoutError)
DATABASE_UNAVAILABLE: Final = ApiError("service_unavailable", "the payments database is unavailable")


@dataclass(frozen=True)
class WorkerConfig:
    dsn: str
    bootstrap: str
    rail: str
    partition_count: int
    allowed_callers: list[str]
    redis_url: str = ""
    grpc_port: int = 0
    ledger_dsns: list[str] = field(default_factory=list)
    retention_s: float = DEFAULT_RETENTION_S
    amount_min_minor: int = 1
    amount_max_minor: int = AMOUNT_MAX_MINOR
    review_at_minor: int = 0
    metrics_port: int = 0  # serve /metrics and /status at this port (0: off)
    bind_address: str = "127.0.0.1"
    fraud_policy_file: str = ""  # the delivered FraudPolicy document ("": none)
    settle_in_process: bool = True  # relay the outbox and apply ledger outcomes here (else: the settler)


def config_from_env(env: dict[str, str]) -> WorkerConfig:
    required = ("PAYPLANE_PAYMENTS_DSN", "KAFKA_BOOTSTRAP", "PAYPLANE_RAIL", "PAYPLANE_ALLOWED_CALLERS")
    missing = [k for k in required if not env.get(k)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")
    try:
        config = WorkerConfig(
            dsn=env["PAYPLANE_PAYMENTS_DSN"],
            bootstrap=env["KAFKA_BOOTSTRAP"],
            rail=env["PAYPLANE_RAIL"],
            partition_count=int(env.get("PAYPLANE_LEDGER_PARTITION_COUNT", "1")),
            allowed_callers=[c.strip() for c in env["PAYPLANE_ALLOWED_CALLERS"].split(",") if c.strip()],
            redis_url=env.get("PAYPLANE_REDIS_URL", ""),
            grpc_port=int(env.get("PAYPLANE_GRPC_PORT", "0")),
            ledger_dsns=parse_dsn_list(env.get("PAYPLANE_LEDGER_DSNS", "")),
            retention_s=float(env.get("PAYPLANE_IDEMPOTENCY_RETENTION_S", str(DEFAULT_RETENTION_S))),
            amount_min_minor=int(env.get("PAYPLANE_AMOUNT_MIN_MINOR", "1")),
            amount_max_minor=int(env.get("PAYPLANE_AMOUNT_MAX_MINOR", str(AMOUNT_MAX_MINOR))),
            review_at_minor=int(env.get("PAYPLANE_REVIEW_AT_MINOR", "0")),
            metrics_port=int(env.get("PAYPLANE_METRICS_PORT", "0")),
            bind_address=env.get("PAYPLANE_BIND_ADDRESS") or "127.0.0.1",
            fraud_policy_file=env.get("PAYPLANE_FRAUD_POLICY_FILE", ""),
            settle_in_process=settles_in_process(env),
        )
        AmountLimits(config.amount_min_minor, config.amount_max_minor)  # refuses min > max at start
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return config


def parse_dsn_list(text: str) -> list[str]:
    """PAYPLANE_LEDGER_DSNS: one DSN per line (what the operator composes, so a multi-host URI with commas
    survives), or, on a single line, comma-separated (handy by hand)."""
    separator = "\n" if "\n" in text else ","
    return [dsn.strip() for dsn in text.split(separator) if dsn.strip()]


# --- rows → messages ------------------------------------------------------------------------------


def payment_message(row: dict[str, Any]) -> pb.Payment:
    return pb.Payment(
        id=row["id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        source_account_id=row["source_account_id"],
        destination_account_id=row["destination_account_id"],
        capture_method=row["capture_method"],
        status=row["status"],
        captured_minor=row["captured_minor"],
        refunded_minor=row["refunded_minor"],
        failure_code=row["failure_code"],
        description=row["description"],
        created_at_us=row["created_at_us"],
        updated_at_us=row["updated_at_us"],
        pending_action=row["pending_action"],
    )


def account_message(row: dict[str, Any]) -> pb.Account:
    return pb.Account(
        id=row["id"],
        currency=row["currency"],
        type=row["type"],
        description=row["description"],
        created_at_us=row["created_at_us"],
    )


def refund_message(row: dict[str, Any]) -> pb.Refund:
    return pb.Refund(
        id=row["id"],
        payment_id=row["payment_id"],
        amount_minor=row["amount_minor"],
        status=row["status"],
        failure_code=row["failure_code"],
        created_at_us=row["created_at_us"],
    )


# --- validation -----------------------------------------------------------------------------------


def _client(caller: pb.Caller) -> str:
    if not caller.client_id:
        raise ApiError("parameter_missing", "caller.client_id is required", "caller")
    return caller.client_id


def _amount(value: int, param: str = "amount", optional: bool = False) -> int | None:
    if optional and value == 0:
        return None
    if value <= 0:
        raise ApiError("amount_invalid", "amount must be a positive integer in minor units", param)
    if value > AMOUNT_MAX_MINOR:
        raise ApiError("amount_too_large", f"amount must be at most {AMOUNT_MAX_MINOR}", param)
    return value


def _currency(value: str) -> str:
    if value not in MINOR_UNIT_EXPONENT:
        raise ApiError("currency_invalid", f"{value!r} is not an ISO 4217 currency payplane accepts", "currency")
    return value


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            value = item[1]
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _fingerprint(request: Message) -> str:
    """For callers that send no fingerprint: the request without caller and idempotency fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("caller", "idempotency"):
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class PaymentService(pb_grpc.PaymentServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: PaymentsStore,
        *,
        allow_list: CallerAllowList,
        policy: FraudPolicy,
        amount_limits: AmountLimits,
        redis: RedisEdge | None,
        retention_s: float,
        ledger_pools: list[asyncpg.Pool],
    ) -> None:
        self.store = store
        self.allow_list = allow_list
        self.policy = policy
        self.amount_limits = amount_limits
        self.redis = redis
        self.retention_s = retention_s
        self.ledger_pools = ledger_pools

    # --- plumbing ---------------------------------------------------------------------------------

    async def _guard(
        self, context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[ResponseT]]
    ) -> ResponseT:
        await self.allow_list.authorize(context)
        current_trace.set(continue_or_start(_metadata(context, TRACEPARENT_HEADER)))
        try:
            return await call()
        except ApiError as exc:
            await self._abort(context, exc)
        except OUTAGE_ERRORS as exc:
            if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                raise  # a bug, not an outage: logged by grpc, answered as internal_error
            log.warning("database unavailable: %r", exc)
            await self._abort(context, DATABASE_UNAVAILABLE)
        raise AssertionError("unreachable: abort raises")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: ApiError) -> None:
        metadata = ((ERROR_METADATA_KEY, json.dumps(error.to_dict())),)
        await context.abort(grpc.StatusCode[error.grpc_status], error.message, trailing_metadata=metadata)

    async def _idempotent(
        self,
        request: Any,
        execute: Callable[[IdempotencyClaim], Awaitable[tuple[bytes, bool]]],
        response_type: type[ResponseT],
    ) -> ResponseT:
        """Run ``execute`` once per (client, key) — it returns (response, replayed) — behind the Redis
        lease that answers concurrent duplicates early."""
        client_id = _client(request.caller)
        try:
            key = validate_key(request.idempotency.key or None)
        except IdempotencyKeyError as exc:
            code = "idempotency_key_missing" if not request.idempotency.key else "idempotency_key_invalid"
            raise ApiError(code, str(exc), "Idempotency-Key") from None
        fingerprint = request.idempotency.fingerprint or _fingerprint(request)
        lease = await self._lease(client_id, key, fingerprint, request.idempotency)
        stored = False
        try:
            if lease is not None and lease.state in (LeaseState.HELD_SAME_BODY, LeaseState.HELD_OTHER_BODY):
                found = await self.store.stored_response(client_id, key)
                if found is not None:
                    raw, replayed = replay_or_refuse(found, fingerprint), True
                elif lease.state is LeaseState.HELD_OTHER_BODY:
                    raise ApiError("idempotency_key_reused", "this Idempotency-Key is in use with a different request")
                else:
                    raise ApiError(
                        "idempotency_key_in_use",
                        "a request with this Idempotency-Key is still being processed; retry later",
                    )
            else:
                raw, replayed = await execute(IdempotencyClaim(client_id, key, fingerprint, self.retention_s))
                stored = True
        finally:
            # Once a response is stored, a duplicate holding the lease finds it and replays it, so the lease
            # may simply expire: releasing it would cost a round trip per request. After a refusal nothing
            # is stored and the key must be free again at once (a corrected retry may reuse it).
            if lease is not None and self.redis is not None and not stored:
                await self.redis.release(lease)
        response = response_type.FromString(raw)
        if replayed:
            response.replayed = True  # type: ignore[attr-defined]
        return response

    async def _lease(self, client_id: str, key: str, fingerprint: str, idempotency: pb.Idempotency) -> Lease | None:
        """The lease the gateway took with its rate check (one Redis round trip for both), else our own."""
        try:
            state = LeaseState(idempotency.lease_state) if idempotency.lease_state else None
        except ValueError:  # a gateway of another version: take the lease here, as for any other caller
            log.warning("unknown idempotency lease state %r: taking the lease here", idempotency.lease_state[:40])
            state = None
        if state is LeaseState.ACQUIRED:
            return Lease(state, lease_name(client_id, key), idempotency.lease_token)
        if state is not None:
            return Lease(state)
        return await self.redis.lease(client_id, key, fingerprint) if self.redis else None

    def _in_transaction(
        self, body: Callable[[Conn, str], Awaitable[bytes]]
    ) -> Callable[[IdempotencyClaim], Awaitable[tuple[bytes, bool]]]:
        """An idempotent execution of ``body`` inside the transaction that claims the key."""

        def execute(claim: IdempotencyClaim) -> Awaitable[tuple[bytes, bool]]:
            return self.store.run_idempotent(claim, lambda conn: body(conn, claim.client_id))

        return execute

    # --- payments ---------------------------------------------------------------------------------

    async def CreatePayment(  # noqa: N802 - gRPC method names
        self, request: pb.CreatePaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PaymentResponse:
        return await self._guard(context, lambda: self.create_payment(request))

    async def create_payment(self, request: pb.CreatePaymentRequest) -> pb.PaymentResponse:
        amount = _amount(request.amount_minor)
        assert amount is not None
        self.amount_limits.check(amount)  # the rail's limits: a client error, never a fraud decline
        currency = _currency(request.currency)
        try:
            capture = CaptureMethod(request.capture_method or "automatic")
        except ValueError:
            raise ApiError(
                "parameter_invalid", "capture_method must be automatic or manual", "capture_method"
            ) from None
        for name, value in (("source", request.source_account_id), ("destination", request.destination_account_id)):
            if not value:
                raise ApiError("parameter_missing", f"{name} is required", name)
        fields = {
            "amount_minor": amount,
            "currency": currency,
            "capture_method": capture.value,
            "source_account_id": request.source_account_id,
            "destination_account_id": request.destination_account_id,
            "description": request.description,
        }

        def render(row: dict[str, Any]) -> bytes:
            return pb.PaymentResponse(payment=payment_message(row)).SerializeToString(deterministic=True)

        def execute(claim: IdempotencyClaim) -> Awaitable[tuple[bytes, bool]]:
            facts = PaymentFacts(claim.client_id, amount, currency, request.source_account_id)
            evaluation = self.policy.evaluate(facts)
            return self.store.create_payment(claim, fields, evaluation, render, current_traceparent())

        response = await self._idempotent(request, execute, pb.PaymentResponse)
        log.info(
            "payment %s: %s%s",
            response.payment.id,
            response.payment.status,
            " (replayed)" if response.replayed else "",
            extra={"payment_id": response.payment.id},
        )
        return response

    async def GetPayment(  # noqa: N802
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            client_id = _client(request.caller)
            if not 0 <= request.wait_ms <= WAIT_MS_MAX:
                raise ApiError("parameter_invalid", f"wait_ms must be within 0..{WAIT_MS_MAX}", "wait_ms")
            deadline = time.monotonic() + request.wait_ms / 1000
            while True:
                row = await self.store.payment(client_id, request.payment_id)
                if row is None:
                    raise ApiError("resource_missing", f"no such payment: {request.payment_id!r}", "id")
                settled = row["status"] != PaymentStatus.PROCESSING.value and not row["pending_action"]
                if settled or time.monotonic() >= deadline:
                    return payment_message(row)
                await asyncio.sleep(WAIT_POLL_S)

        return await self._guard(context, call)

    async def ListPayments(  # noqa: N802
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListPaymentsResponse:
        async def call() -> pb.ListPaymentsResponse:
            client_id = _client(request.caller)
            limit = request.limit or 10
            if not 1 <= limit <= LIST_LIMIT_MAX:
                raise ApiError("parameter_invalid", f"limit must be within 1..{LIST_LIMIT_MAX}", "limit")
            rows, has_more = await self.store.list_payments(client_id, limit, request.starting_after)
            return pb.ListPaymentsResponse(data=[payment_message(r) for r in rows], has_more=has_more)

        return await self._guard(context, call)

    async def _capture_or_cancel(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], kind: OpKind, amount: int | None
    ) -> pb.PaymentResponse:
        async def call() -> pb.PaymentResponse:
            async def body(conn: Conn, client_id: str) -> bytes:
                row = await self.store.capture_or_cancel(conn, client_id, request.payment_id, kind, amount)
                return pb.PaymentResponse(payment=payment_message(row)).SerializeToString(deterministic=True)

            return await self._idempotent(request, self._in_transaction(body), pb.PaymentResponse)

        return await self._guard(context, call)

    async def CapturePayment(  # noqa: N802
        self, request: pb.CapturePaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PaymentResponse:
        try:
            amount = _amount(request.amount_minor, "amount_to_capture", optional=True)
        except ApiError as exc:
            await self.allow_list.authorize(context)
            await self._abort(context, exc)
            raise
        return await self._capture_or_cancel(request, context, OpKind.CAPTURE, amount)

    async def CancelPayment(  # noqa: N802
        self, request: pb.CancelPaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PaymentResponse:
        return await self._capture_or_cancel(request, context, OpKind.VOID, None)

    async def CreateRefund(  # noqa: N802
        self, request: pb.CreateRefundRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RefundResponse:
        async def call() -> pb.RefundResponse:
            amount = _amount(request.amount_minor, optional=True)

            async def body(conn: Conn, client_id: str) -> bytes:
                row = await self.store.create_refund(conn, client_id, request.payment_id, amount)
                return pb.RefundResponse(refund=refund_message(row)).SerializeToString(deterministic=True)

            return await self._idempotent(request, self._in_transaction(body), pb.RefundResponse)

        return await self._guard(context, call)

    # --- admin review -----------------------------------------------------------------------------

    async def ListReviews(  # noqa: N802
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListPaymentsResponse:
        async def call() -> pb.ListPaymentsResponse:
            _client(request.caller)
            limit = request.limit or 10
            if not 1 <= limit <= LIST_LIMIT_MAX:
                raise ApiError("parameter_invalid", f"limit must be within 1..{LIST_LIMIT_MAX}", "limit")
            rows, has_more = await self.store.list_reviews(limit, request.starting_after)
            return pb.ListPaymentsResponse(data=[payment_message(r) for r in rows], has_more=has_more)

        return await self._guard(context, call)

    async def _review(
        self, request: pb.ReviewPaymentRequest, context: grpc.aio.ServicerContext[Any, Any], approve: bool
    ) -> pb.PaymentResponse:
        async def call() -> pb.PaymentResponse:
            async def body(conn: Conn, _admin_client_id: str) -> bytes:
                row = await self.store.review_decision(conn, request.payment_id, approve)
                return pb.PaymentResponse(payment=payment_message(row)).SerializeToString(deterministic=True)

            return await self._idempotent(request, self._in_transaction(body), pb.PaymentResponse)

        return await self._guard(context, call)

    async def ApprovePayment(  # noqa: N802
        self, request: pb.ReviewPaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PaymentResponse:
        return await self._review(request, context, approve=True)

    async def RejectPayment(  # noqa: N802
        self, request: pb.ReviewPaymentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PaymentResponse:
        return await self._review(request, context, approve=False)

    # --- accounts ---------------------------------------------------------------------------------

    async def CreateAccount(  # noqa: N802
        self, request: pb.CreateAccountRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AccountResponse:
        async def call() -> pb.AccountResponse:
            currency = _currency(request.currency)
            try:
                account_type = AccountType(request.type or "wallet")
            except ValueError:
                raise ApiError("parameter_invalid", "type must be wallet or external", "type") from None

            async def body(conn: Conn, client_id: str) -> bytes:
                row = await self.store.create_account(conn, client_id, currency, account_type, request.description)
                return pb.AccountResponse(account=account_message(row)).SerializeToString(deterministic=True)

            return await self._idempotent(request, self._in_transaction(body), pb.AccountResponse)

        return await self._guard(context, call)

    async def _owned_account(self, request: pb.GetAccountRequest) -> dict[str, Any]:
        row = await self.store.account(_client(request.caller), request.account_id)
        if row is None:
            raise ApiError("resource_missing", f"no such account: {request.account_id!r}", "id")
        return row

    async def GetAccount(  # noqa: N802
        self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Account:
        async def call() -> pb.Account:
            return account_message(await self._owned_account(request))

        return await self._guard(context, call)

    async def GetAccountBalance(  # noqa: N802
        self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AccountBalance:
        async def call() -> pb.AccountBalance:
            account = await self._owned_account(request)
            for pool in self.ledger_pools:
                async with pool.acquire() as conn:
                    found = await ledger_queries.balance(conn, account["id"])  # type: ignore[arg-type]
                if found is not None:
                    return pb.AccountBalance(
                        account_id=account["id"],
                        currency=found["currency"],
                        available_minor=found["available_minor"],
                        posted_minor=found["posted_balance_minor"],
                        pending_debits_minor=found["pending_debits_minor"],
                        pending_credits_minor=found["pending_credits_minor"],
                    )
            # not in the ledger yet (its create command is in flight): an empty account
            return pb.AccountBalance(account_id=account["id"], currency=account["currency"])

        return await self._guard(context, call)


class PaymentBatchService(pb_grpc.PaymentBatchServiceServicer):  # type: ignore[misc]
    """The gateway's batches of CreatePayment calls: each item is handled exactly as a CreatePayment
    call (same validation, idempotency contract, trace context, answer) and concurrently with the
    others, so they share the store's group commit; a refusal is that item's answer, not the RPC's."""

    def __init__(self, payments: PaymentService) -> None:
        self.payments = payments

    async def CreatePayments(  # noqa: N802 - gRPC method names
        self, request: pb.CreatePaymentBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreatePaymentBatchResponse:
        await self.payments.allow_list.authorize(context)
        # one task per item (gather): each sets its own trace context
        results = await asyncio.gather(*(self._item(item) for item in request.items))
        return pb.CreatePaymentBatchResponse(results=results)

    async def _item(self, item: pb.CreatePaymentBatchItem) -> pb.CreatePaymentResult:
        current_trace.set(continue_or_start(item.traceparent or None))
        try:
            return pb.CreatePaymentResult(response=await self.payments.create_payment(item.request))
        except ApiError as exc:
            error = exc
        except OUTAGE_ERRORS as exc:
            if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                log.exception("CreatePayment in a batch failed")
                error = ApiError("internal_error", "the payment service failed; retry with the same Idempotency-Key")
            else:
                log.warning("database unavailable: %r", exc)
                error = DATABASE_UNAVAILABLE
        except Exception:
            log.exception("CreatePayment in a batch failed")
            error = ApiError("internal_error", "the payment service failed; retry with the same Idempotency-Key")
        return pb.CreatePaymentResult(error_json=json.dumps(error.to_dict()))


# --- the process ----------------------------------------------------------------------------------


async def _cleanup_loop(store: PaymentsStore, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError):
            await cleanup_round(store, stopping)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), CLEANUP_INTERVAL_S)


async def cleanup_round(store: PaymentsStore, stopping: asyncio.Event) -> None:
    """Expired idempotency keys, deleted batch by batch until a batch comes back short, so a round keeps
    up with any rate (a batch a minute would not), with a pause between batches so that the deletes are
    spread out instead of taking the database's CPU from the payments in one burst. (Outbox rows need
    no cleanup: the relay deletes them as it sends them.)"""
    total = 0
    while not stopping.is_set():
        deleted = await store.cleanup_expired_keys()
        total += deleted
        if deleted < CLEANUP_BATCH_MAX:
            break
        await asyncio.sleep(CLEANUP_PAUSE_S)
    if total:
        log.info("removed %d expired idempotency keys", total)


def fraud_policy(config: WorkerConfig, metrics: PaymentWorkerMetrics) -> PolicyFile:
    """The default policy plus the delivered FraudPolicy, loaded before the first request."""
    path = Path(config.fraud_policy_file) if config.fraud_policy_file else None
    policy = PolicyFile(path, ReviewThresholdPolicy(config.review_at_minor), metrics)
    policy.check()
    return policy


async def run(config: WorkerConfig) -> int:
    topics = RailTopics(config.rail)
    await migrate_database(config.dsn, MIGRATIONS_PACKAGE)
    metrics = PaymentWorkerMetrics(settlement=config.settle_in_process)
    store = await PaymentsStore.open(
        config.dsn, topics, config.partition_count, observe_create_batch=metrics.create_batch
    )
    # min_size=0: connect on the first balance read, so a shard database that is down never stops payments
    ledger_pools = [
        await asyncpg.create_pool(d, min_size=0, max_size=4, timeout=LEDGER_CONNECT_TIMEOUT_S)
        for d in config.ledger_dsns
    ]
    redis = RedisEdge(config.redis_url) if config.redis_url else None
    policy = fraud_policy(config, metrics)
    source = SvidSource()
    service = PaymentService(
        store,
        allow_list=CallerAllowList(config.allowed_callers),
        policy=policy,
        amount_limits=AmountLimits(config.amount_min_minor, config.amount_max_minor),
        redis=redis,
        retention_s=config.retention_s,
        ledger_pools=ledger_pools,
    )
    server = grpc.aio.server()
    pb_grpc.add_PaymentServiceServicer_to_server(service, server)
    pb_grpc.add_PaymentBatchServiceServicer_to_server(PaymentBatchService(service), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (SERVICE_NAME, BATCH_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(services, server)
    port = server.add_secure_port(f"{config.bind_address}:{config.grpc_port}", server_credentials(source))
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address, status=lambda: worker_status(config, policy))
    settlement = (
        Settlement(dsn=config.dsn, bootstrap=config.bootstrap, topics=topics, store=store, metrics=metrics.settlement)
        if metrics.settlement is not None
        else None
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    tasks = [
        *(settlement.start() if settlement is not None else []),
        asyncio.create_task(_cleanup_loop(store, stopping)),
        asyncio.create_task(policy.watch(stopping)),
    ]
    failed = stop_when_a_task_dies(tasks, stopping, log)
    print(f"LISTENING {port}", flush=True)
    log.info("payment worker for rail %s serving on %s:%d", config.rail, config.bind_address, port)
    try:
        await stopping.wait()
        return 1 if failed else 0
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=5.0)
        if settlement is not None:
            settlement.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        if redis is not None:
            await redis.close()
        for pool in ledger_pools:
            await pool.close()
        await store.close()
        source.close()


def worker_status(config: WorkerConfig, policy: PolicyFile) -> dict[str, Any]:
    """``GET /status`` on the metrics port: the rail and the FraudPolicy version in effect (the operator
    reads it into the FraudPolicy's status)."""
    return {"role": "payment-worker", "rail": config.rail, **policy.state.to_dict()}


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("payment-worker", help="run one payment worker (configured from the environment)")
    parser.set_defaults(handler=main)


def main(_args: argparse.Namespace) -> int:
    return serve_from_env(config_from_env, run, log)
