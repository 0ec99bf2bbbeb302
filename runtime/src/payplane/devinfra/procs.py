"""Detached server processes that ``up`` starts and ``down`` stops: pid files, logs, liveness.

A pid file records the pid and the kernel's start time of that process, so a recycled pid is never
mistaken for ours and ``down`` never signals a process it did not start.
"""

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1  # prctl(2)
LOG_TAIL_LINES = 25


def _process_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime) counted after the ")" that ends the command name
    fields_after_comm = stat.rsplit(")", 1)[1].split()
    state = fields_after_comm[0]
    if state == "Z":
        return None
    return int(fields_after_comm[19])


def port_is_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(content[-lines:])


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """One server process owned by the local infrastructure."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this system user (only when we are root)
    stop_with_parent: bool = False  # SIGTERM when the starting process dies, even by SIGKILL

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def recorded_pid(self) -> int | None:
        """The pid from our pid file if that very process is still running, else None."""
        try:
            pid_text, ticks_text = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        if _process_start_ticks(pid) != int(ticks_text):
            return None
        return pid

    def is_running(self) -> bool:
        return self.recorded_pid() is not None

    def start(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.log_file.open("ab") as log:
            started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n==== {started_at} starting {' '.join(self.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                preexec_fn=_terminate_with_parent if self.stop_with_parent else None,  # noqa: PLW1509 - prctl only
            )
        ticks = _process_start_ticks(proc.pid)
        self.pid_file.write_text(f"{proc.pid} {ticks}\n")
        return proc.pid

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns True if a process was stopped."""
        pid = self.recorded_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.recorded_pid() is not None:
            time.sleep(0.1)
        if self.recorded_pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.recorded_pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self) -> str:
        return tail(self.log_file)
