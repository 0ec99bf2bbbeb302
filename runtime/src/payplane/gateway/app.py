"""The gateway's HTTP/JSON edge (aiohttp): authentication, rate limiting, validation, rendering, and
calls to the payment worker over SPIFFE-mTLS gRPC.

Every response body is rendered deterministically from the worker's answer, so an idempotent replay
(the worker returns the very first answer) is byte-identical to the original; replays carry
``Idempotent-Replayed: true``. Every failure is a JSON error object; unexpected exceptions become a
logged ``internal_error`` instead of a crash.
"""

import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import grpc
import grpc.aio
import msgspec
from aiohttp import web

from payplane._gen.v1 import payments_pb2 as pb
from payplane._gen.v1 import payments_pb2_grpc as pb_grpc
from payplane.gateway import schema
from payplane.payments.errors import ApiError
from payplane.payments.idempotency import IdempotencyKeyError, fingerprint, validate_key
from payplane.platform.group_commit import GroupCommit
from payplane.platform.tracing import TRACEPARENT_HEADER, continue_or_start, current_trace

log = logging.getLogger("payplane.gateway")

ERROR_METADATA_KEY: Final = "payplane-error"
RPC_TIMEOUT_S: Final = 10.0
AUTH_CACHE_S: Final = 5.0  # a revoked key stops working within this long
JSON: Final = "application/json"
ADMIN_ROLE: Final = "admin"
CREATE_BATCH_MAX: Final = 128  # CreatePayment calls per gRPC call to a worker
# Batch calls in flight per worker replica: one while fewer than CREATE_OVERLAP_ITEMS_MIN requests wait
# (the next batch forms while a call travels and leaves when it returns, so batches grow with the load:
# 0.1-0.15 ms less CPU per payment at 1,000/s than with two), two under a burst (the next call does not
# wait for the previous one; docs/benchmarks.md).
CREATE_BATCHES_PER_WORKER: Final = 2
CREATE_OVERLAP_ITEMS_MIN: Final = 32

# Compact UTF-8 JSON, keys in insertion order: the bytes ``json.dumps(value, separators=(",", ":"),
# ensure_ascii=False)`` gives, at a fraction of its CPU (every response is rendered here).
_JSON_ENCODER: Final = msgspec.json.Encoder()
_JSON_DECODER: Final = msgspec.json.Decoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Principal:
    client_id: str
    role: str


class RateLimitedError(Exception):
    """The client is over its rate; it may retry after ``retry_after_s`` whole seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limited for {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.error = ApiError("rate_limited", "too many requests; retry after the Retry-After delay")


@dataclass(frozen=True)
class Admission:
    """A client's rate check and, for a request with an idempotency key, the lease taken with it in the
    same round trip (``lease_state`` empty: none was taken; the worker takes it itself)."""

    allowed: bool
    retry_after_s: float = 0.0
    lease_state: str = ""
    lease_token: str = ""


@dataclass(frozen=True)
class _CreateAsk:
    """A CreatePayment waiting for its batch; ``admit``: its rate check and key lease are still to be taken
    (in the batch's one Redis round trip)."""

    item: pb.CreatePaymentBatchItem
    admit: bool


Authenticator = Callable[[str], Awaitable[Principal | None]]
# (client id, (idempotency key, fingerprint) or None) -> the admission
Admitter = Callable[[str, tuple[str, str] | None], Awaitable[Admission]]
# several requests' (client id, (key, fingerprint)) at once: one round trip, answers in order
BatchAdmitter = Callable[[Sequence[tuple[str, tuple[str, str]]]], Awaitable[list[Admission]]]


class WorkerPool:
    """Round-robin over worker replicas (one mTLS channel each), so one long-lived HTTP/2 connection
    never pins all traffic to one replica. Each target gives a fresh channel after SVID rotation."""

    def __init__(self, channels: Sequence[Callable[[], grpc.aio.Channel]]) -> None:
        if not channels:
            raise ValueError("at least one payment worker target is required")
        self._channels = list(channels)
        self._next = itertools.cycle(range(len(self._channels)))
        # a stub builds a callable per RPC method: build it once per channel, not once per request
        self._stubs: list[tuple[grpc.aio.Channel | None, Any, Any]] = [(None, None, None)] * len(self._channels)

    def __len__(self) -> int:
        return len(self._channels)

    def _next_stubs(self) -> tuple[Any, Any]:
        index = next(self._next)
        channel = self._channels[index]()  # a new channel after an SVID rotation
        cached_channel, stub, batch_stub = self._stubs[index]
        if cached_channel is not channel:
            stub, batch_stub = pb_grpc.PaymentServiceStub(channel), pb_grpc.PaymentBatchServiceStub(channel)
            self._stubs[index] = (channel, stub, batch_stub)
        return stub, batch_stub

    def stub(self) -> Any:
        """The PaymentService of the next replica."""
        return self._next_stubs()[0]

    def batch_stub(self) -> Any:
        """The PaymentBatchService of the next replica."""
        return self._next_stubs()[1]


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the request's trace context to the payment worker (a child span)."""
    context = current_trace.get()
    return ((TRACEPARENT_HEADER, context.child().traceparent),) if context is not None else ()


def _dumps(value: object) -> bytes:
    return _JSON_ENCODER.encode(value)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_dumps({"error": error.to_dict()}), status=error.http_status, content_type=JSON, headers=headers
    )


def _seconds(us: int) -> int:
    return us // 1_000_000


def render_payment(p: pb.Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "payment",
        "amount": p.amount_minor,
        "currency": p.currency,
        "status": p.status,
        "source": p.source_account_id,
        "destination": p.destination_account_id,
        "capture_method": p.capture_method,
        "amount_captured": p.captured_minor,
        "amount_refunded": p.refunded_minor,
        "failure_code": p.failure_code or None,
        "pending_action": p.pending_action or None,
        "description": p.description,
        "created": _seconds(p.created_at_us),
    }


def render_refund(r: pb.Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "refund",
        "payment": r.payment_id,
        "amount": r.amount_minor,
        "status": r.status,
        "failure_code": r.failure_code or None,
        "created": _seconds(r.created_at_us),
    }


def render_account(a: pb.Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "account",
        "currency": a.currency,
        "type": a.type,
        "description": a.description,
        "created": _seconds(a.created_at_us),
    }


def render_balance(b: pb.AccountBalance) -> dict[str, Any]:
    return {
        "object": "balance",
        "account": b.account_id,
        "currency": b.currency,
        "available": b.available_minor,
        "posted": b.posted_minor,
        "pending_debits": b.pending_debits_minor,
        "pending_credits": b.pending_credits_minor,
    }


def _error_from_rpc(exc: grpc.aio.AioRpcError) -> ApiError:
    for item in exc.trailing_metadata() or ():
        key, value = cast(tuple[str, str], item)
        if key == ERROR_METADATA_KEY:
            try:
                return ApiError.from_dict(json.loads(value))
            except (ValueError, TypeError):
                break
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ApiError("service_unavailable", "the payment service is unavailable; retry with the same key")
    log.error("payment worker answered %s: %s", exc.code(), exc.details())
    return ApiError("internal_error", "the payment service failed; retry with the same Idempotency-Key")


def _batch_result(result: pb.CreatePaymentResult) -> pb.PaymentResponse | ApiError:
    if result.WhichOneof("result") == "response":
        return result.response
    try:
        return ApiError.from_dict(json.loads(result.error_json))
    except (ValueError, TypeError, AttributeError):
        log.error("payment worker answered an unreadable error: %.200s", result.error_json)
        return ApiError("internal_error", "the payment service failed; retry with the same Idempotency-Key")


def _refusal(admission: Admission) -> RateLimitedError | None:
    """The error a request the rate check refused gets (Retry-After in whole seconds, at least 1)."""
    return None if admission.allowed else RateLimitedError(max(1, int(admission.retry_after_s + 0.999)))


class RequestObserver(Protocol):
    """Where the gateway reports each finished request (metrics); the default ignores it."""

    def request_done(self, route: str, method: str, status: int, seconds: float, replayed: bool) -> None: ...


class _IgnoreRequests:
    def request_done(self, route: str, method: str, status: int, seconds: float, replayed: bool) -> None:
        pass


class Gateway:
    def __init__(
        self,
        workers: WorkerPool,
        authenticate: Authenticator,
        admission: Admitter,
        batch_admission: BatchAdmitter,
        body_bytes_max: int = 16 * 1024,
        *,
        observer: RequestObserver | None = None,
    ) -> None:
        self.workers = workers
        self.authenticate = authenticate
        self.admission = admission
        self.batch_admission = batch_admission
        self.body_bytes_max = body_bytes_max
        self.openapi = _dumps(schema.openapi_document())
        self._auth_cache: dict[str, tuple[float, Principal | None]] = {}
        self.observer: RequestObserver = observer or _IgnoreRequests()
        # concurrent CreatePayment calls travel to the workers in batches: one Redis round trip for their rate
        # checks and leases, then one gRPC call for the admitted
        self._creates: GroupCommit[_CreateAsk, pb.PaymentResponse] = GroupCommit(
            self._create_payments,
            max_items=CREATE_BATCH_MAX,
            max_in_flight=CREATE_BATCHES_PER_WORKER * len(workers),
            overlap_items_min=CREATE_OVERLAP_ITEMS_MIN,
            deadline_s=RPC_TIMEOUT_S,
        )

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.body_bytes_max, middlewares=[self._measure, self._errors, self._auth]
        )
        app.router.add_get("/openapi.json", self.get_openapi)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/v1/accounts", self.create_account)
        app.router.add_get("/v1/accounts/{id}", self.get_account)
        app.router.add_get("/v1/accounts/{id}/balance", self.get_balance)
        app.router.add_post("/v1/payments", self.create_payment)
        app.router.add_get("/v1/payments", self.list_payments)
        app.router.add_get("/v1/payments/{id}", self.get_payment)
        app.router.add_post("/v1/payments/{id}/capture", self.capture_payment)
        app.router.add_post("/v1/payments/{id}/cancel", self.cancel_payment)
        app.router.add_post("/v1/refunds", self.create_refund)
        app.router.add_get("/v1/reviews", self.list_reviews)
        app.router.add_post("/v1/payments/{id}/approve", self.approve_payment)
        app.router.add_post("/v1/payments/{id}/reject", self.reject_payment)
        return app

    # --- middleware -------------------------------------------------------------------------------

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started_s = time.perf_counter()
        current_trace.set(continue_or_start(request.headers.get(TRACEPARENT_HEADER)))
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(unmatched)"
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        self.observer.request_done(route, request.method, response.status, time.perf_counter() - started_s, replayed)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:  # noqa: PLR0911
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
        except grpc.aio.AioRpcError as exc:
            return error_response(_error_from_rpc(exc))
        except web.HTTPRequestEntityTooLarge:
            return error_response(ApiError("body_too_large", f"the request body exceeds {self.body_bytes_max} bytes"))
        except web.HTTPMethodNotAllowed:
            return error_response(ApiError("method_not_allowed", f"{request.method} is not allowed on {request.path}"))
        except web.HTTPNotFound:
            return error_response(ApiError("route_missing", f"no route for {request.method} {request.path[:200]}"))
        except web.HTTPException as exc:
            if exc.status >= 500:
                raise
            return error_response(ApiError("parameter_invalid", exc.reason))
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path[:200])
            return error_response(ApiError("internal_error", "an unexpected error occurred"))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/openapi.json", "/healthz"):
            return await handler(request)
        authorization = request.headers.get("Authorization", "")
        try:
            if request.method == "POST":
                # every POST carries an Idempotency-Key: its rate check runs once the body is valid, together
                # with the key's lease (one Redis round trip for both: in _post_body, or for a new payment in
                # its batch's one round trip)
                request["principal"] = await self.authenticated(authorization)
            else:
                request["principal"] = await self.admit(authorization)
            return await handler(request)
        except RateLimitedError as exc:
            return error_response(exc.error, {"Retry-After": str(exc.retry_after_s)})

    async def admit(self, authorization: str) -> Principal:
        """The client an ``Authorization: Bearer sk_...`` value names, once it passed the rate limit.
        Raises ApiError (401) for a missing or bad key and RateLimitedError; both edges (REST, gRPC) use it."""
        principal = await self.authenticated(authorization)
        self._allowed(await self.admission(principal.client_id, None))
        return principal

    async def authenticated(self, authorization: str) -> Principal:
        """The client an ``Authorization: Bearer sk_...`` value names (ApiError 401 for a missing or bad key)."""
        if not authorization:
            raise ApiError("api_key_missing", "send your API key as 'Authorization: Bearer sk_...'")
        scheme, _, key = authorization.partition(" ")
        principal = await self._principal(key.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise ApiError("api_key_invalid", "the API key is invalid or revoked")
        return principal

    async def admit_idempotent(self, principal: Principal, idempotency: pb.Idempotency) -> None:
        """Rate-check a request that carries an idempotency key and take the key's lease in the same
        round trip; the lease travels to the worker in ``idempotency``. Raises RateLimitedError."""
        admission = await self.admission(principal.client_id, (idempotency.key, idempotency.fingerprint))
        self._allowed(admission)
        idempotency.lease_state, idempotency.lease_token = admission.lease_state, admission.lease_token

    @staticmethod
    def _allowed(admission: Admission) -> None:
        refusal = _refusal(admission)
        if refusal is not None:
            raise refusal

    async def _principal(self, key: str) -> Principal | None:
        now = time.monotonic()
        cached = self._auth_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self.authenticate(key)
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[key] = (now + AUTH_CACHE_S, principal)
        return principal

    # --- calls to the workers ----------------------------------------------------------------------

    async def create_payment_call(self, message: pb.CreatePaymentRequest, *, admitted: bool) -> pb.PaymentResponse:
        """CreatePayment on a worker, batched with the concurrent ones: the answer, or the ApiError the
        worker refused it with (an AioRpcError if the batch's call failed as a whole). Unless ``admitted``
        (the caller ran the rate check itself), the batch checks the client's rate and takes the key's
        lease first, and a refusal raises RateLimitedError. Answered within RPC_TIMEOUT_S, queueing for
        a batch included (the group commit's deadline)."""
        context = current_trace.get()
        traceparent = context.child().traceparent if context is not None else ""
        item = pb.CreatePaymentBatchItem(request=message, traceparent=traceparent)
        try:
            return await self._creates.submit(_CreateAsk(item, admit=not admitted))
        except TimeoutError:
            raise ApiError(
                "service_unavailable", "the payment service is unavailable; retry with the same key"
            ) from None

    async def _create_payments(self, asks: Sequence[_CreateAsk]) -> list[pb.PaymentResponse | BaseException]:
        refusals = await self._admit_creates(asks)
        sent = [ask.item for ask, refusal in zip(asks, refusals, strict=True) if refusal is None]
        answers = iter(await self._send_creates(sent) if sent else [])
        return [refusal if refusal is not None else next(answers) for refusal in refusals]

    async def _admit_creates(self, asks: Sequence[_CreateAsk]) -> list[RateLimitedError | None]:
        """Rate checks and leases for the asks that still need them (one Redis round trip, none if no ask
        does); each admitted ask carries its lease to the worker. Returns each ask's refusal, or None."""
        requests = [ask.item.request for ask in asks if ask.admit]
        waiting = [(r.caller.client_id, (r.idempotency.key, r.idempotency.fingerprint)) for r in requests]
        answers = iter(await self.batch_admission(waiting) if waiting else [])
        refusals: list[RateLimitedError | None] = []
        for ask in asks:
            admission = next(answers) if ask.admit else None
            refusals.append(_refusal(admission) if admission is not None else None)
            if admission is not None and admission.allowed:
                idempotency = ask.item.request.idempotency
                idempotency.lease_state, idempotency.lease_token = admission.lease_state, admission.lease_token
        return refusals

    async def _send_creates(self, items: Sequence[pb.CreatePaymentBatchItem]) -> list[pb.PaymentResponse | ApiError]:
        answer = await self.workers.batch_stub().CreatePayments(
            pb.CreatePaymentBatch(items=items), timeout=RPC_TIMEOUT_S
        )
        return [_batch_result(result) for result in answer.results]

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _caller(request: web.Request) -> pb.Caller:
        principal: Principal = request["principal"]
        return pb.Caller(client_id=principal.client_id)

    async def _post_body(
        self, request: web.Request, fields: tuple[schema.Field, ...], *, admit: bool = True
    ) -> tuple[dict[str, Any], pb.Idempotency]:
        """The validated body and its idempotency (key, fingerprint); with ``admit``, after the client's
        rate check and the key's lease (RateLimitedError)."""
        try:
            key = validate_key(request.headers.get("Idempotency-Key"))
        except IdempotencyKeyError as exc:
            code = (
                "idempotency_key_missing" if not request.headers.get("Idempotency-Key") else "idempotency_key_invalid"
            )
            raise ApiError(code, str(exc), "Idempotency-Key") from None
        raw = await request.read()
        if raw.strip():
            try:
                body: object = _JSON_DECODER.decode(raw)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the parser goes
                raise ApiError("json_invalid", "the request body is not valid JSON") from None
        else:
            body = {}
        values = schema.validate_body(body, fields)
        idempotency = pb.Idempotency(key=key, fingerprint=fingerprint(request.method, request.path, values))
        if admit:
            await self.admit_idempotent(request["principal"], idempotency)
        return values, idempotency

    @staticmethod
    def _json(value: object, replayed: bool = False) -> web.Response:
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return web.Response(body=_dumps(value), status=200, content_type=JSON, headers=headers)

    @staticmethod
    def _require_admin(request: web.Request) -> None:
        principal: Principal = request["principal"]
        if principal.role != ADMIN_ROLE:
            raise ApiError("admin_required", "this operation needs an API key with the admin role")

    @staticmethod
    def _path_id(request: web.Request) -> str:
        value = request.match_info["id"]
        if len(value) > schema.ID_MAX:
            raise ApiError("resource_missing", "no such object", "id")
        return value

    # --- handlers ---------------------------------------------------------------------------------

    async def get_openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type=JSON)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    async def create_account(self, request: web.Request) -> web.Response:
        values, idem = await self._post_body(request, schema.CREATE_ACCOUNT)
        message = pb.CreateAccountRequest(
            caller=self._caller(request),
            idempotency=idem,
            currency=values["currency"],
            type=values.get("type", ""),
            description=values.get("description", ""),
        )
        answer = await self.workers.stub().CreateAccount(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
        return self._json(render_account(answer.account), answer.replayed)

    async def get_account(self, request: web.Request) -> web.Response:
        message = pb.GetAccountRequest(caller=self._caller(request), account_id=self._path_id(request))
        return self._json(
            render_account(
                await self.workers.stub().GetAccount(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
            )
        )

    async def get_balance(self, request: web.Request) -> web.Response:
        message = pb.GetAccountRequest(caller=self._caller(request), account_id=self._path_id(request))
        return self._json(
            render_balance(
                await self.workers.stub().GetAccountBalance(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
            )
        )

    async def create_payment(self, request: web.Request) -> web.Response:
        values, idem = await self._post_body(request, schema.CREATE_PAYMENT, admit=False)  # admitted in the batch
        message = pb.CreatePaymentRequest(
            caller=self._caller(request),
            idempotency=idem,
            amount_minor=values["amount"],
            currency=values["currency"],
            source_account_id=values["source"],
            destination_account_id=values["destination"],
            capture_method=values.get("capture_method", ""),
            description=values.get("description", ""),
        )
        answer = await self.create_payment_call(message, admitted=False)
        # The worker logs every payment it creates and every change of its status (INFO, with the same
        # payment and trace ids); this line repeats the first at the busiest process's event loop, whose
        # tail latency it measurably lengthened (docs/benchmarks.md), so it is written at DEBUG only.
        log.debug("payment %s accepted", answer.payment.id, extra={"payment_id": answer.payment.id})
        return self._json(render_payment(answer.payment), answer.replayed)

    async def list_payments(self, request: web.Request) -> web.Response:
        query = schema.validate_query(dict(request.query), schema.LIST_QUERY)
        message = pb.ListPaymentsRequest(
            caller=self._caller(request), limit=query.get("limit", 10), starting_after=query.get("starting_after", "")
        )
        answer = await self.workers.stub().ListPayments(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
        return self._json(
            {
                "object": "list",
                "data": [render_payment(p) for p in answer.data],
                "has_more": answer.has_more,
                "url": "/v1/payments",
            }
        )

    async def get_payment(self, request: web.Request) -> web.Response:
        query = schema.validate_query(dict(request.query), schema.GET_PAYMENT_QUERY)
        wait_ms = query.get("wait_ms", 0)
        message = pb.GetPaymentRequest(caller=self._caller(request), payment_id=self._path_id(request), wait_ms=wait_ms)
        answer = await self.workers.stub().GetPayment(
            message, timeout=RPC_TIMEOUT_S + wait_ms / 1000, metadata=trace_metadata()
        )
        return self._json(render_payment(answer))

    async def capture_payment(self, request: web.Request) -> web.Response:
        values, idem = await self._post_body(request, schema.CAPTURE_PAYMENT)
        message = pb.CapturePaymentRequest(
            caller=self._caller(request),
            idempotency=idem,
            payment_id=self._path_id(request),
            amount_minor=values.get("amount_to_capture", 0),
        )
        answer = await self.workers.stub().CapturePayment(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
        return self._json(render_payment(answer.payment), answer.replayed)

    async def cancel_payment(self, request: web.Request) -> web.Response:
        _values, idem = await self._post_body(request, schema.CANCEL_PAYMENT)
        message = pb.CancelPaymentRequest(
            caller=self._caller(request), idempotency=idem, payment_id=self._path_id(request)
        )
        answer = await self.workers.stub().CancelPayment(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
        return self._json(render_payment(answer.payment), answer.replayed)

    async def create_refund(self, request: web.Request) -> web.Response:
        values, idem = await self._post_body(request, schema.CREATE_REFUND)
        message = pb.CreateRefundRequest(
            caller=self._caller(request),
            idempotency=idem,
            payment_id=values["payment"],
            amount_minor=values.get("amount", 0),
        )
        answer = await self.workers.stub().CreateRefund(message, timeout=RPC_TIMEOUT_S, metadata=trace_metadata())
        return self._json(render_refund(answer.refund), answer.replayed)

    # --- admin: fraud review ----------------------------------------------------------------------

    async def list_reviews(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        query = schema.validate_query(dict(request.query), schema.LIST_QUERY)
        message = pb.ListPaymentsRequest(
            caller=self._caller(request), limit=query.get("limit", 10), starting_after=query.get("starting_after", "")
        )
        answer = await self.workers.stub().ListReviews(message, timeout=RPC_TIMEOUT_S)
        return self._json(
            {
                "object": "list",
                "data": [render_payment(p) for p in answer.data],
                "has_more": answer.has_more,
                "url": "/v1/reviews",
            }
        )

    async def approve_payment(self, request: web.Request) -> web.Response:
        return await self._review(request, approve=True)

    async def reject_payment(self, request: web.Request) -> web.Response:
        return await self._review(request, approve=False)

    async def _review(self, request: web.Request, approve: bool) -> web.Response:
        self._require_admin(request)
        _values, idem = await self._post_body(request, schema.REVIEW_PAYMENT)
        message = pb.ReviewPaymentRequest(
            caller=self._caller(request), idempotency=idem, payment_id=self._path_id(request)
        )
        stub = self.workers.stub()
        call = stub.ApprovePayment if approve else stub.RejectPayment
        answer = await call(message, timeout=RPC_TIMEOUT_S)
        return self._json(render_payment(answer.payment), answer.replayed)
