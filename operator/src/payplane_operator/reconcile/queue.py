"""Per-object serialisation and coalesced wake-ups (asyncio only).

``KeyedLocks`` makes every reconcile of one object run alone, whoever triggered it (a kopf handler, the
drift timer, a wake-up from another object). ``Pokes`` is a tiny work queue for wake-ups: a key already
waiting is not queued twice, and a short debounce folds bursts (a Deployment's status changing five
times in a second) into one reconcile.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}

    def __call__(self, key: K) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def forget(self, key: K) -> None:
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class Pokes(Generic[K]):
    """Run ``handle(key)`` soon for every poked key; each key at most once per pending poke."""

    def __init__(self, handle: Callable[[K], Awaitable[None]], *, workers: int, debounce_s: float) -> None:
        self._handle = handle
        self._workers = workers
        self._debounce_s = debounce_s
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._pending: set[K] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"payplane-pokes-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def poke(self, key: K) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            await asyncio.sleep(self._debounce_s)
            self._pending.discard(key)  # pokes arriving from now on ask for another run
            try:
                await self._handle(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("wake-up of %s failed", key)
