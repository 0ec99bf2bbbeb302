"""Redis 7 from Debian's packages, on its own port, with its data in the state directory."""

import shutil
import socket

from payplane.devinfra import versions
from payplane.devinfra.components.base import Component
from payplane.devinfra.errors import MissingToolError
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.waiting import wait_healthy


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise MissingToolError(
            f"Redis {versions.REDIS_MAJOR}", "apt-get install redis-server (the test setup .ci/run does this)"
        )
    return path


def ping(port: int, timeout_s: float = 1.0) -> bool:
    """A real RESP round trip: PING must answer +PONG."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(b"*1\r\n$4\r\nPING\r\n")
        return conn.recv(64).startswith(b"+PONG")


class Redis(Component):
    name = "redis"

    def build(self) -> None:
        _redis_server()

    def ports(self) -> list[int]:
        return [self.settings.ports.redis]

    def processes(self) -> list[ManagedProcess]:
        data_dir = self.settings.state_dir / "redis"
        return [
            self.process(
                "redis",
                [
                    _redis_server(),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.settings.ports.redis),
                    "--dir",
                    str(data_dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
            )
        ]

    def healthy(self) -> bool:
        return ping(self.settings.ports.redis)

    def start(self) -> None:
        (self.settings.state_dir / "redis").mkdir(parents=True, exist_ok=True)
        (proc,) = self.processes()
        proc.start()
        wait_healthy(self.name, self.healthy, self.start_timeout_s, proc)

    def endpoints(self) -> dict[str, str]:
        return {"PAYPLANE_REDIS_URL": f"redis://127.0.0.1:{self.settings.ports.redis}/0"}
