"""JSON log lines for every payplane process: one object per line, safe for any message text.

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, plus any ``extra={...}`` a caller
passes (for example ``payment_id``), ``trace_id`` while a request's trace context is current (see
``payplane.platform.tracing``) and ``exc`` for exceptions.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Final

from payplane.platform.tracing import current_trace

_STANDARD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = current_trace.get()
        if trace is not None:
            line["trace_id"] = trace.trace_id
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
