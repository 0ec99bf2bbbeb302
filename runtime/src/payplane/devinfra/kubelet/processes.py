"""One container's processes over its life: start, exit, backoff, restart, stop; pid records.

Each process starts in a session of its own (so SIGTERM/SIGKILL reach its children too), with its
output appended to ``<pod dir>/<container>.log`` and its pid and kernel start time recorded in
``<pod dir>/<container>.pid``. A kubelet that starts again kills every recorded process that is still
running (``reap_orphans``) before it runs anything, so no process outlives its kubelet unnoticed.
"""

import contextlib
import datetime
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from payplane.devinfra.kubelet.podspec import ProcessSpec
from payplane.devinfra.kubelet.status import (
    RESTART_BACKOFF_RESET_S,
    ContainerView,
    Exit,
    backoff_s,
    restart_wanted,
)
from payplane.devinfra.local_identity import spawn_identity
from payplane.devinfra.procs import _process_start_ticks

ORPHAN_GRACE_S: Final = 10.0
PID_SUFFIX: Final = ".pid"


def rfc3339(at: datetime.datetime | None = None) -> str:
    return (at or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _recorded_alive(pid_file: Path) -> int | None:
    try:
        pid_text, ticks_text = pid_file.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    return pid if _process_start_ticks(pid) == int(ticks_text) else None


def reap_orphans(pods_dir: Path, grace_s: float = ORPHAN_GRACE_S) -> list[int]:
    """SIGTERM every recorded process still running, SIGKILL what outlives ``grace_s``; returns their pids."""
    records = sorted(pods_dir.glob(f"*/*{PID_SUFFIX}"))
    alive = {record: pid for record in records if (pid := _recorded_alive(record)) is not None}
    for pid in alive.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_recorded_alive(r) is not None for r in alive):
        time.sleep(0.1)
    for record, pid in alive.items():
        if _recorded_alive(record) is not None:
            _signal_group(pid, signal.SIGKILL)
    for record in records:
        record.unlink(missing_ok=True)
    return list(alive.values())


@dataclass
class ContainerRuntime:
    """The kubelet's record of one container of one pod."""

    name: str
    image: str
    pod_dir: Path
    restart_policy: str
    restart_count: int = 0
    count_first_start: bool = False  # a previous kubelet had started it: the next start is a restart
    popen: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono_s: float = 0.0
    last_exit: Exit | None = None
    consecutive_failures: int = 0
    next_start_mono_s: float = 0.0
    finished: bool = False
    config_error: str | None = None
    ready: bool = False
    stop_deadline_mono_s: float | None = None
    killed: bool = False
    probe_successes: int = 0
    probe_failures: int = 0
    next_probe_mono_s: float = 0.0

    @property
    def log_file(self) -> Path:
        return self.pod_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.pod_dir / f"{self.name}{PID_SUFFIX}"

    @property
    def running(self) -> bool:
        return self.popen is not None

    def start(self, spec: ProcessSpec) -> None:
        identity: dict[str, Any] = dict(spawn_identity(spec.gid)) if spec.gid is not None else {}
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"==== {rfc3339()} process kubelet starts: {' '.join(spec.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env),
                cwd=self.pod_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                group=identity.get("group"),
                extra_groups=identity.get("extra_groups"),
            )
        if spec.niceness:
            # at once, while the new process has its main thread only (the threads it starts inherit it)
            with contextlib.suppress(ProcessLookupError):  # gone already: its exit is noticed by poll()
                os.setpriority(os.PRIO_PROCESS, self.popen.pid, spec.niceness)
        self.pid_file.write_text(f"{self.popen.pid} {_process_start_ticks(self.popen.pid)}\n")
        if self.count_first_start or self.last_exit is not None:
            self.restart_count += 1
        self.count_first_start = False
        self.started_at, self.started_mono_s = rfc3339(), time.monotonic()
        self.config_error, self.ready, self.killed = None, False, False
        self.probe_successes = self.probe_failures = 0

    def poll(self, now_mono_s: float) -> None:
        """Notice an exit: record it, and schedule the restart (with backoff) or finish."""
        if self.popen is None:
            return
        code = self.popen.poll()
        if code is None:
            return
        self.popen = None
        self.pid_file.unlink(missing_ok=True)
        signal_number = -code if code < 0 else None
        exit_code = 128 + signal_number if signal_number is not None else code
        self.last_exit = Exit(exit_code, self.started_at or rfc3339(), rfc3339(), signal_number)
        self.ready = False
        ran_s = now_mono_s - self.started_mono_s
        self.consecutive_failures = 1 if ran_s >= RESTART_BACKOFF_RESET_S else self.consecutive_failures + 1
        if self.stop_deadline_mono_s is not None or not restart_wanted(self.restart_policy, exit_code):
            self.finished = True
        else:
            self.next_start_mono_s = now_mono_s + backoff_s(self.consecutive_failures)

    def due_to_start(self, now_mono_s: float) -> bool:
        return not self.running and not self.finished and now_mono_s >= self.next_start_mono_s

    def stop(self, grace_s: float, now_mono_s: float) -> bool:
        """Begin (or continue) stopping: SIGTERM now, SIGKILL after ``grace_s``. True once nothing runs."""
        self.poll(now_mono_s)
        self.finished = True
        if self.popen is None:
            return True
        if self.stop_deadline_mono_s is None:
            self.stop_deadline_mono_s = now_mono_s + grace_s
            _signal_group(self.popen.pid, signal.SIGTERM)
        elif now_mono_s >= self.stop_deadline_mono_s and not self.killed:
            _signal_group(self.popen.pid, signal.SIGKILL)
            self.killed = True
        return False

    def view(self, now_mono_s: float) -> ContainerView:
        waiting_reason, message = None, ""
        if self.config_error is not None:
            waiting_reason, message = "CreateContainerConfigError", self.config_error
        elif not self.running and self.last_exit is not None and not self.finished:
            waiting_reason = "CrashLoopBackOff"
            delay_s = backoff_s(self.consecutive_failures)
            message = f"back-off {delay_s:.0f}s restarting failed container={self.name}"
        return ContainerView(
            name=self.name,
            image=self.image,
            pid=self.popen.pid if self.popen is not None else None,
            started_at=self.started_at,
            ready=self.ready,
            restart_count=self.restart_count,
            last_exit=self.last_exit,
            waiting_reason=waiting_reason,
            waiting_message=message,
            finished=self.finished and not self.running,
        )
