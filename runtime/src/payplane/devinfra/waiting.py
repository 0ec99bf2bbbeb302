"""Bounded waits: every wait in the local infrastructure has a deadline and says what it waited for."""

import time
from collections.abc import Callable

from payplane.devinfra.errors import NotHealthyError
from payplane.devinfra.procs import ManagedProcess


def _probe(check: Callable[[], bool]) -> bool:
    """Run one health probe; a probe that raises (connection refused, timeout) means "not yet"."""
    try:
        return check()
    except Exception:  # noqa: BLE001
        return False


def wait_healthy(
    component: str,
    check: Callable[[], bool],
    timeout_s: float,
    process: ManagedProcess,
    poll_s: float = 0.2,
) -> None:
    """Poll ``check`` until it passes; fail early if ``process`` died, or at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _probe(check):
            return
        if not process.is_running():
            raise NotHealthyError(f"{component} (process exited)", timeout_s, str(process.log_file), process.log_tail())
        if time.monotonic() > deadline:
            raise NotHealthyError(component, timeout_s, str(process.log_file), process.log_tail())
        time.sleep(poll_s)
