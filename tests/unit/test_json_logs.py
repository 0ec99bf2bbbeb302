"""Log lines are valid JSON whatever the message holds, and carry extra fields and exceptions."""

import json
import logging
import sys

from payplane.platform.logs import JsonFormatter


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("payplane.test", logging.WARNING, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_awkward_messages_stay_valid_json() -> None:
    line = JsonFormatter().format(_record('quote " backslash \\ newline \n done', payment_id="pay_1"))
    parsed = json.loads(line)
    assert parsed["msg"] == 'quote " backslash \\ newline \n done'
    assert parsed["payment_id"] == "pay_1"
    assert parsed["level"] == "WARNING"
    assert parsed["ts"].endswith("+00:00")


def test_exceptions_are_included() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]
