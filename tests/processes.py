"""Child processes in integration tests: wait, bounded, for a server's ``LISTENING <port>`` line, and
stop everything a test started."""

import selectors
import subprocess
from collections.abc import Iterable

import pytest


def listening_port(proc: subprocess.Popen[str], what: str, timeout_s: float) -> int:
    """The port from the process's first stdout line ``LISTENING <port>``; fails the test otherwise."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("LISTENING "):
        proc.kill()
        _, stderr = proc.communicate()
        detail = stderr[-4000:] if stderr else "(written to its log file)"
        pytest.fail(f"{what} did not start listening within {timeout_s:.0f} s; stderr:\n{detail}")
    return int(line.split()[1])


def stop_processes(procs: Iterable[subprocess.Popen[str]], grace_s: float) -> None:
    """SIGTERM, wait ``grace_s``, then SIGKILL; close the pipes."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
