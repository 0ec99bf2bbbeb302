"""Progress lines for a person watching ``payplane infra up`` (stderr, timestamped from start)."""

import sys
import time

_started_at_s = time.monotonic()


def say(message: str) -> None:
    elapsed_s = time.monotonic() - _started_at_s
    print(f"[{elapsed_s:6.1f}s] {message}", file=sys.stderr, flush=True)
