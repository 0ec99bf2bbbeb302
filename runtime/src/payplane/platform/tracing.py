"""W3C trace context (``traceparent``) along the payment path, without a tracing SDK.

The gateway accepts a client's ``traceparent`` header (or starts a trace), passes it to the payment
worker as gRPC metadata, the worker stores it with the outbox rows it writes, and the relay sends it as
the Kafka ``traceparent`` header of the ledger command. Each process keeps the current context in a
context variable (one per request task), so every JSON log line written while handling a request
carries ``trace_id`` (see ``payplane.platform.logs``).

Format (https://www.w3.org/TR/trace-context/): ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex
flags>``; all-zero ids are invalid. Ids are lower-case hex.
"""

import random
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

TRACEPARENT_HEADER: Final = "traceparent"  # HTTP header, gRPC metadata key and Kafka header alike
_TRACEPARENT: Final = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_VERSION: Final = "ff"
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
SAMPLED: Final = "01"


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = SAMPLED

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> "TraceContext":
        """The context a callee receives: same trace, a new span (this process's call)."""
        return TraceContext(self.trace_id, _span_id(), self.flags)


# Trace and span ids must be unique, not secret (W3C Trace Context; OpenTelemetry's SDK draws them the same
# way): a PRNG seeded from the OS is a fraction of the cost of a getrandom() system call per id.
_IDS: Final = random.Random(secrets.randbits(128))  # noqa: S311 - unique, not secret


def _span_id() -> str:
    return f"{_IDS.getrandbits(64) or 1:016x}"


def new_trace() -> TraceContext:
    return TraceContext(f"{_IDS.getrandbits(128) or 1:032x}", _span_id())


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context in a ``traceparent`` value, or None when absent or malformed (then start a new trace)."""
    match = _TRACEPARENT.match(value.strip().lower()) if value else None
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == _INVALID_VERSION or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, flags)


def continue_or_start(value: str | None) -> TraceContext:
    """This process's span of the trace in ``value``, or of a new trace."""
    parent = parse_traceparent(value)
    return parent.child() if parent is not None else new_trace()


def trace_id_of(traceparent: str) -> str:
    parsed = parse_traceparent(traceparent)
    return parsed.trace_id if parsed is not None else ""


current_trace: ContextVar[TraceContext | None] = ContextVar("payplane_trace", default=None)


def current_traceparent() -> str:
    context = current_trace.get()
    return context.traceparent if context is not None else ""
