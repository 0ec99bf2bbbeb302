"""Named crash points for fault tests: ``PAYPLANE_CRASH_AT=<point>[:<nth>]`` kills the process with
SIGKILL the nth time it passes that point (default the first). Unset in production: a no-op."""

import os
import signal
from collections import Counter
from typing import Final

CRASH_ENV: Final = "PAYPLANE_CRASH_AT"
_passes: Counter[str] = Counter()


def crash_point(name: str) -> None:
    setting = os.environ.get(CRASH_ENV)
    if not setting:
        return
    point, _, nth = setting.partition(":")
    if point != name:
        return
    _passes[name] += 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
