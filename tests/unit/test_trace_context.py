"""W3C trace context: parsing, continuing or starting a trace, and trace ids in JSON log lines."""

import json
import logging

import pytest

from payplane.platform.logs import JsonFormatter
from payplane.platform.tracing import (
    TraceContext,
    continue_or_start,
    current_trace,
    current_traceparent,
    parse_traceparent,
    trace_id_of,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_parsed() -> None:
    assert parse_traceparent(PARENT) == TraceContext(TRACE_ID, "00f067aa0ba902b7", "01")
    assert parse_traceparent(f"  {PARENT.upper()} ") == TraceContext(TRACE_ID, "00f067aa0ba902b7", "01")
    assert trace_id_of(PARENT) == TRACE_ID


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",  # short trace id
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",
    ],
)
def test_malformed_traceparents_are_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None
    assert trace_id_of(value or "") == ""


def test_a_callee_continues_the_trace_with_its_own_span() -> None:
    child = continue_or_start(PARENT)
    assert child.trace_id == TRACE_ID
    assert child.span_id != "00f067aa0ba902b7"
    assert parse_traceparent(child.traceparent) == child
    assert child.child().trace_id == TRACE_ID


def test_without_a_parent_a_new_trace_starts() -> None:
    first, second = continue_or_start(None), continue_or_start("nonsense")
    assert first.trace_id != second.trace_id
    assert parse_traceparent(first.traceparent) == first


def _line(message: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("payplane.test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_log_lines_carry_the_current_trace_id() -> None:
    assert "trace_id" not in _line("outside any request")
    assert current_traceparent() == ""
    token = current_trace.set(TraceContext(TRACE_ID, "00f067aa0ba902b7"))
    try:
        line = _line("payment accepted", payment_id="pay_1")
        assert current_traceparent() == PARENT
    finally:
        current_trace.reset(token)
    assert (line["trace_id"], line["payment_id"]) == (TRACE_ID, "pay_1")
    # an explicit trace id (a log line about another request's payment) wins over the context
    assert _line("settled", trace_id="other")["trace_id"] == "other"
