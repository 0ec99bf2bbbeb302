"""The gateway's public gRPC edge: the REST operations over gRPC (``payplane.v1.PaymentService``).

Clients call the same service the payment worker implements, with their API key in the
``authorization`` metadata (``Bearer sk_...``) and the Idempotency-Key in ``Idempotency.key`` of each
write. The gateway authenticates and rate-limits exactly as for REST (``Gateway.admit``), replaces
whatever ``caller`` the client sent with the authenticated client, drops any client-supplied
fingerprint (the worker fingerprints the request itself), checks field sizes, and forwards the call
to a worker over SPIFFE mTLS. Refusals carry the gRPC status of their stable code (the table in
``payplane.payments.errors``) and the error object as JSON in the ``payplane-error`` trailing
metadata; a rate-limited call also carries ``retry-after`` (seconds). A ``traceparent`` metadata entry
continues the client's trace to the worker, as the HTTP header does (``payplane.platform.tracing``).
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf.message import Message

from payplane._gen.v1 import payments_pb2 as pb
from payplane.gateway import schema
from payplane.gateway.app import (
    ADMIN_ROLE,
    ERROR_METADATA_KEY,
    RPC_TIMEOUT_S,
    Gateway,
    RateLimitedError,
    _error_from_rpc,
    trace_metadata,
)
from payplane.payments.errors import ApiError
from payplane.platform.tracing import TRACEPARENT_HEADER, continue_or_start, current_trace

log = logging.getLogger("payplane.gateway.grpc")

SERVICE_NAME: Final = "payplane.v1.PaymentService"
AUTHORIZATION_KEY: Final = "authorization"
# fields that carry free text (longer) rather than ids or codes
TEXT_FIELDS: Final = frozenset({"description"})
WAIT_MS_MAX: Final = 10_000
ADMIN_METHODS: Final = frozenset({"ListReviews", "ApprovePayment", "RejectPayment"})

Unary = Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for item in context.invocation_metadata() or ():
        name, value = item
        if name == key:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def check_field_sizes(request: Message) -> None:
    """The size limits the REST schema states, for the same fields sent over gRPC."""
    for descriptor, value in request.ListFields():
        if descriptor.name == "idempotency" or not isinstance(value, str):
            continue
        limit = schema.STRING_MAX if descriptor.name in TEXT_FIELDS else schema.ID_MAX
        if len(value) > limit:
            raise ApiError(
                "parameter_invalid", f"{descriptor.name} must be at most {limit} characters", descriptor.name
            )


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], error: ApiError, extra: tuple[tuple[str, str], ...] = ()
) -> None:
    metadata = ((ERROR_METADATA_KEY, json.dumps(error.to_dict())), *extra)
    await context.abort(grpc.StatusCode[error.grpc_status], error.message, trailing_metadata=metadata)


class PublicPaymentService:
    """One handler per ``PaymentService`` method, all through ``_forward``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def handler(self) -> "grpc.GenericRpcHandler[Any, Any]":
        service = pb.DESCRIPTOR.services_by_name["PaymentService"]
        handlers = {}
        for method in service.methods:
            request_type: type[Message] = getattr(pb, method.input_type.name)
            response_type: type[Message] = getattr(pb, method.output_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                self._forwarder(method.name),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _forwarder(self, method: str) -> Unary:
        async def forward(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            current_trace.set(continue_or_start(_metadata(context, TRACEPARENT_HEADER)))
            try:
                return await self._forward(method, request, context)
            except RateLimitedError as exc:
                await abort_with(context, exc.error, (("retry-after", str(exc.retry_after_s)),))
            except ApiError as exc:
                await abort_with(context, exc)
            except grpc.aio.AioRpcError as exc:
                await abort_with(context, _error_from_rpc(exc))
            raise AssertionError("unreachable: abort raises")

        return forward

    async def _forward(self, method: str, request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        principal = await self.gateway.admit(_metadata(context, AUTHORIZATION_KEY))
        if method in ADMIN_METHODS and principal.role != ADMIN_ROLE:
            raise ApiError("admin_required", "this operation needs an API key with the admin role")
        check_field_sizes(request)
        request.caller.CopyFrom(pb.Caller(client_id=principal.client_id))  # type: ignore[attr-defined]
        if "idempotency" in request.DESCRIPTOR.fields_by_name:
            for name in ("fingerprint", "lease_state", "lease_token"):  # the gateway's to set, not the client's
                request.idempotency.ClearField(name)  # type: ignore[attr-defined]
        if isinstance(request, pb.CreatePaymentRequest):
            # batched like the REST edge's; the rate check ran above and the worker takes the key's lease
            return await self.gateway.create_payment_call(request, admitted=True)
        wait_ms = max(0, min(int(getattr(request, "wait_ms", 0)), WAIT_MS_MAX))
        timeout_s = RPC_TIMEOUT_S + wait_ms / 1000
        call = getattr(self.gateway.workers.stub(), method)
        response: Message = await call(request, timeout=timeout_s, metadata=trace_metadata())
        return response
