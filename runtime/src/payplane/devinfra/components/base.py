"""The shape every component shares: build (cached) → start (unless already healthy) → wait → endpoints."""

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from payplane.devinfra.errors import PortInUseError
from payplane.devinfra.procs import ManagedProcess, port_is_open
from payplane.devinfra.progress import say
from payplane.devinfra.settings import InfraSettings


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    detail: str


class Component(abc.ABC):
    """A real server (or a group of them) on loopback, owned by payplane's local infrastructure."""

    name: ClassVar[str]
    start_timeout_s: ClassVar[float] = 60.0

    def __init__(self, settings: InfraSettings) -> None:
        self.settings = settings

    def process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        return ManagedProcess(
            name=name,
            argv=argv,
            run_dir=self.settings.run_dir,
            log_dir=self.settings.log_dir,
            env=env or {},
        )

    @property
    def build_log(self) -> Path:
        return self.settings.log_dir / f"build-{self.name}.log"

    @abc.abstractmethod
    def build(self) -> None:
        """Obtain the binaries (cached by version); a no-op when the cache is warm."""

    @abc.abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """The processes this component runs, in start order."""

    @abc.abstractmethod
    def ports(self) -> list[int]:
        """The loopback ports this component listens on."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """A real health probe (a query, a request), not just an open port."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the processes and wait, bounded, until each is healthy."""

    @abc.abstractmethod
    def endpoints(self) -> dict[str, str]:
        """Environment-style endpoint variables for tests and tools."""

    def up(self) -> dict[str, str]:
        self.build()
        if all(p.is_running() for p in self.processes()) and self.healthy():
            say(f"{self.name}: already running and healthy, reusing it")
            return self.endpoints()
        self.down()
        for port in self.ports():
            if port_is_open(port):
                raise PortInUseError(self.name, port)
        say(f"{self.name}: starting")
        self.start()
        say(f"{self.name}: healthy")
        return self.endpoints()

    def down(self) -> None:
        for proc in reversed(self.processes()):
            if proc.stop():
                say(f"{self.name}: stopped {proc.name}")

    def status(self) -> ComponentStatus:
        procs = self.processes()
        running = all(p.is_running() for p in procs)
        healthy = running and self.healthy()
        detail = ", ".join(f"{p.name}={'up' if p.is_running() else 'down'}" for p in procs)
        return ComponentStatus(self.name, running, healthy, detail)
