"""A lean HTTP/1.1 client for load generation: keep-alive connections, one request in flight on each.

The benchmark's load generator shares the machine's two cores with everything it measures, so its own
cost per request is part of the result. aiohttp's client spends about 0.25 ms of CPU per request here;
this one writes a prepared request and parses only the status line and ``Content-Length`` of the answer
(the gateway always sends one), which costs a fraction of that. It is a benchmark tool, not a general
client: no chunked bodies, no redirects, no TLS.
"""

import asyncio
from typing import Final, cast

HEADER_END: Final = b"\r\n\r\n"
HEADER_BYTES_MAX: Final = 64 * 1024


class HttpProtocolError(Exception):
    """The server's answer is not an HTTP/1.1 response this client reads, or the connection ended."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` may be awaited by one caller at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._body_start = -1
        self._body_bytes = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(HttpProtocolError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._body_start < 0 and not self._read_head():
            return
        end = self._body_start + self._body_bytes
        if len(self._buffer) >= end and self._answer is not None and not self._answer.done():
            self._answer.set_result((self._status, bytes(self._buffer[self._body_start : end])))
            del self._buffer[:end]
            self._body_start = -1

    def _read_head(self) -> bool:
        head_end = self._buffer.find(HEADER_END)
        if head_end < 0:
            if len(self._buffer) > HEADER_BYTES_MAX:
                self._fail("response head too large")
            return False
        lines = bytes(self._buffer[:head_end]).split(b"\r\n")
        try:
            self._status = int(lines[0].split(b" ", 2)[1])
            lengths = [line.split(b":", 1)[1] for line in lines[1:] if line[:15].lower() == b"content-length:"]
            self._body_bytes = int(lengths[0])
        except (IndexError, ValueError):
            self._fail(f"unreadable response head: {bytes(self._buffer[:200])!r}")
            return False
        self._body_start = head_end + len(HEADER_END)
        return True

    def _fail(self, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(HttpProtocolError(reason))
        if self._transport is not None:
            self._transport.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HttpLoadClient:
    """Keep-alive connections to one server, opened on demand and reused; ``post`` returns (status, body)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[_Connection] = []

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        raw = (head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body
        connection = self._idle.pop() if self._idle else await self._open()
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await connection.request(raw)
        except BaseException:
            connection.close()
            raise
        if not connection.closed:
            self._idle.append(connection)
        return answer

    async def _open(self) -> _Connection:
        transport, connection = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        connection.connection_made(transport)  # uvloop calls it only on the next loop turn
        return connection

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
