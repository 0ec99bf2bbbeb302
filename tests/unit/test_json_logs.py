"""Log lines are valid JSON whatever the message holds, and carry extra fields and exceptions; the lines of
one event-loop turn are written together, in order."""

import asyncio
import io
import json
import logging
import sys

from payplane.platform.logs import JsonFormatter, LoopTurnHandler


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


def test_lines_of_one_loop_turn_are_written_together_and_in_order() -> None:
    class CountingStream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = CountingStream()
    handler = LoopTurnHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("payplane.test.batched")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def one_turn() -> int:
        logger.info("first")
        logger.info("second")
        written_before_turn_ends = stream.writes
        await asyncio.sleep(0)  # the turn ends: the pending lines go out
        logger.info("third")
        logger.warning("fourth")  # a warning goes at once, after what is pending
        return written_before_turn_ends

    try:
        assert asyncio.run(one_turn()) == 0
        logger.info("outside a loop")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["first", "second", "third", "fourth", "outside a loop"]
    assert stream.writes == 3  # first+second, third+fourth, the line outside a loop
