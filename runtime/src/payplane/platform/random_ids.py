"""Random hex tokens for ids (payments, refunds, accounts, lease tokens), drawn from the operating
system's CSPRNG a few kilobytes at a time: ``secrets.token_hex`` makes a getrandom() system call per id,
which was a few per cent of a payment worker's CPU. The bytes are the same kind (unpredictable); only
the number of system calls changes. Not for keys or secrets that must never share a buffer with ids:
use ``secrets`` for those.
"""

import os
import threading
from typing import Final

POOL_BYTES: Final = 4096


class _Pool:
    def __init__(self) -> None:
        self._bytes = b""
        self._next = 0
        self._lock = threading.Lock()  # the gRPC and Kafka clients run threads of their own

    def take(self, nbytes: int) -> bytes:
        with self._lock:
            if self._next + nbytes > len(self._bytes):
                self._bytes, self._next = os.urandom(max(POOL_BYTES, nbytes)), 0
            start, self._next = self._next, self._next + nbytes
            return self._bytes[start : self._next]


_POOL: Final = _Pool()


def token_hex(nbytes: int) -> str:
    """``2 * nbytes`` hex characters of OS randomness, like ``secrets.token_hex``."""
    return _POOL.take(nbytes).hex()
