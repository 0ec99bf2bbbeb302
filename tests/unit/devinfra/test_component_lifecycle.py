"""Component.up(): reuse what is healthy, refuse a port someone else holds, restart what is broken."""

import socket
import sys
from pathlib import Path

import pytest

from payplane.devinfra.components.base import Component
from payplane.devinfra.errors import PortInUseError
from payplane.devinfra.procs import ManagedProcess, port_is_open
from payplane.devinfra.settings import InfraSettings, Ports
from payplane.devinfra.waiting import wait_healthy

SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.close()
"""


class TinyServer(Component):
    """A real loopback listener standing in for a component; healthy when its port accepts."""

    name = "tiny"
    start_timeout_s = 10.0

    def __init__(self, settings: InfraSettings, port: int) -> None:
        super().__init__(settings)
        self.port = port
        self.starts = 0

    def build(self) -> None:
        pass

    def ports(self) -> list[int]:
        return [self.port]

    def processes(self) -> list[ManagedProcess]:
        return [self.process("tiny", [sys.executable, "-c", SERVER, str(self.port)])]

    def healthy(self) -> bool:
        return port_is_open(self.port)

    def start(self) -> None:
        self.starts += 1
        (proc,) = self.processes()
        proc.start()
        wait_healthy(self.name, self.healthy, self.start_timeout_s, proc, poll_s=0.05)

    def endpoints(self) -> dict[str, str]:
        return {"TINY": f"127.0.0.1:{self.port}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> InfraSettings:
    return InfraSettings(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        ports=Ports(30000),
        trust_domain="test.local",
        svid_ttl_s=60,
    )


def test_up_starts_then_reuses_then_down_stops(settings: InfraSettings) -> None:
    tiny = TinyServer(settings, _free_port())
    try:
        assert tiny.up() == {"TINY": f"127.0.0.1:{tiny.port}"}
        assert tiny.up() == {"TINY": f"127.0.0.1:{tiny.port}"}
        assert tiny.starts == 1, "a healthy component must be reused, not restarted"
        assert tiny.status().healthy
    finally:
        tiny.down()
    assert not port_is_open(tiny.port)
    assert not tiny.status().running


def test_up_refuses_a_port_held_by_a_stranger(settings: InfraSettings) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        tiny = TinyServer(settings, stranger.getsockname()[1])
        with pytest.raises(PortInUseError, match=str(tiny.port)):
            tiny.up()
        assert tiny.starts == 0


def test_up_restarts_a_component_whose_process_died(settings: InfraSettings) -> None:
    tiny = TinyServer(settings, _free_port())
    try:
        tiny.up()
        (proc,) = tiny.processes()
        pid = proc.recorded_pid()
        assert pid is not None
        __import__("os").kill(pid, 9)
        for _ in range(100):
            if not proc.is_running():
                break
            __import__("time").sleep(0.05)
        tiny.up()
        assert tiny.starts == 2
        assert tiny.status().healthy
    finally:
        tiny.down()
