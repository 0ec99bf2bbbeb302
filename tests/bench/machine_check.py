"""How fast this machine is right now, for reading a benchmark's figures against another day's.

The payment path's CPU goes mostly to round trips between processes and to waking them up (docs/
benchmarks.md: from 300/s to 1,000/s the busy CPU hardly grows), and the machine's speed at exactly that
moves from hour to hour on a shared host while a pure-Python loop does not. So the check measures both,
each in well under a second: a loopback TCP round trip between two processes (each side blocks, so
every round trip wakes both), and a fixed piece of Python work in this process.
"""

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Final

from tests.processes import stop_processes

ROUND_TRIPS: Final = 5_000  # one after the other
IDLE_ROUND_TRIPS: Final = 300  # with IDLE_GAP_S between them: each wakes both processes from sleep
IDLE_GAP_S: Final = 0.002
MESSAGE: Final = b"x" * 64
REFERENCE_ITEMS: Final = 200_000

# a child that echoes whatever arrives on one connection (binds 127.0.0.1 only, on a free port)
_ECHO_SERVER: Final = """
import socket
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(65536):
    conn.sendall(data)
"""


@dataclass(frozen=True)
class RoundTrips:
    """Loopback round trips between two processes."""

    median_us: float
    mean_us: float
    cpu_us: float  # this side's CPU time per round trip (system calls and wake-ups)

    def render(self) -> str:
        return f"median {self.median_us:.0f} µs, mean {self.mean_us:.0f} µs, {self.cpu_us:.0f} µs of CPU"


@dataclass(frozen=True)
class MachineCheck:
    busy: RoundTrips  # one after the other
    from_idle: RoundTrips  # each after IDLE_GAP_S asleep
    reference_ms: float  # the fixed Python work

    def render(self) -> str:
        return (
            f"machine check: loopback round trips between two processes, back to back: {self.busy.render()};"
            f" from idle: {self.from_idle.render()}; reference Python work {self.reference_ms:.0f} ms"
        )


def _series(conn: socket.socket, count: int, gap_s: float) -> RoundTrips:
    times_s = []
    cpu_s = 0.0
    for _ in range(count):
        if gap_s:
            time.sleep(gap_s)
        cpu_started_s = time.process_time()
        started_s = time.perf_counter()
        conn.sendall(MESSAGE)
        received = 0
        while received < len(MESSAGE):
            received += len(conn.recv(65536))
        times_s.append(time.perf_counter() - started_s)
        cpu_s += time.process_time() - cpu_started_s
    times_s.sort()
    return RoundTrips(
        median_us=times_s[len(times_s) // 2] * 1e6, mean_us=sum(times_s) / count * 1e6, cpu_us=cpu_s / count * 1e6
    )


def round_trips() -> tuple[RoundTrips, RoundTrips]:
    """(back to back, from idle), against an echo process of its own."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _series(conn, ROUND_TRIPS, 0.0), _series(conn, IDLE_ROUND_TRIPS, IDLE_GAP_S)
    finally:
        stop_processes([child], grace_s=1.0)


def reference_ms() -> float:
    """Dicts, strings and integers, as request handling uses them."""
    started = time.perf_counter()
    index: dict[str, int] = {}
    for n in range(REFERENCE_ITEMS):
        key = f"pay_{n:08d}"
        index[key] = index.get(key[:-1], 0) + n
    return (time.perf_counter() - started) * 1000


def check_machine() -> MachineCheck:
    return MachineCheck(*round_trips(), reference_ms())


if __name__ == "__main__":
    print(check_machine().render())
