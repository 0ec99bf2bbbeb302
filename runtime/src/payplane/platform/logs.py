"""JSON log lines for every payplane process: one object per line, safe for any message text.

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, plus any ``extra={...}`` a caller
passes (for example ``payment_id``), ``trace_id`` while a request's trace context is current (see
``payplane.platform.tracing``) and ``exc`` for exceptions.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Final

import msgspec

from payplane.platform.tracing import current_trace

_STANDARD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


_ENCODER: Final = msgspec.json.Encoder(enc_hook=str)  # a value JSON has no form for is written as its str()


class JsonFormatter(logging.Formatter):
    """Cheap enough for a line per payment: the timestamp's seconds are formatted once per second, extra
    fields are found with one set difference, and one encoder is reused."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created_s: float) -> str:
        second = int(created_s)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created_s - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = current_trace.get()
        if trace is not None:
            line["trace_id"] = trace.trace_id
        fields = vars(record)
        for key in fields.keys() - _STANDARD_ATTRIBUTES:
            line[key] = fields[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line).decode()


class LoopTurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the lines logged during one turn of the running event loop together: one write system call
    per turn instead of one per line (a busy worker logs several lines per payment). Warnings and errors,
    and lines logged outside an event loop (other threads, start-up), are written at once, with whatever
    is pending before them, so the order of lines is kept."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._flushing_loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self._pending.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging.Handler contract: report through handleError, never raise
            self.handleError(record)
            return
        flushing_loop = self._flushing_loop
        if flushing_loop is not None and not flushing_loop.is_closed() and record.levelno < logging.WARNING:
            return  # this turn's flush is already on its way
        loop = _running_loop()  # (costs a getpid() system call on Python 3.11: once per turn, not per line)
        if record.levelno >= logging.WARNING or loop is None:
            self._write_pending()
        else:
            self._flushing_loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._flushing_loop = None
            self._write_pending()
        finally:
            self.release()

    def _write_pending(self) -> None:
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream must not take the process down
                pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def configure_json_logging(level: int = logging.INFO) -> None:
    # the JSON lines name no source file, thread or process: skip collecting them for every record
    logging._srcfile = None  # documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopTurnHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
