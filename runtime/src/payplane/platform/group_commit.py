"""Group commit: concurrent callers' items coalesced into one call of a batch function.

Each ``submit`` waits for the answer to its own item. A batch starts as soon as fewer than
``max_in_flight`` batches are running (at the next turn of the event loop, so callers that arrived in
the same turn share it); while the running batches use every slot, new items queue and leave together,
at most ``max_items`` at a time, when a slot frees. So an idle system adds no wait, and a busy one sends
batches as large as the load makes them: one round trip, one commit and one fsync for many callers.

The batch function returns one result per item, in order; a result that is an exception is raised to
that item's caller only. If the batch function itself raises, every caller of that batch gets the
exception (callers are never left waiting).

With ``overlap_items_min``, a batch starts while another is running only once that many items wait:
at moderate load one batch at a time (larger batches, less work per item), under a burst several
(the next round trip does not wait for the previous one).

With ``deadline_s``, every item is answered within that long of its ``submit``: an item still queued
then gets ``TimeoutError`` and is never sent, and a batch that runs past its oldest item's deadline is
cancelled, its callers getting ``TimeoutError``. One timer per batch does it, not one per caller.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

MAX_ITEMS_DEFAULT: Final = 256
MAX_IN_FLIGHT_DEFAULT: Final = 2

BatchFunction = Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]


class GroupCommit(Generic[ItemT, ResultT]):
    def __init__(
        self,
        run_batch: BatchFunction[ItemT, ResultT],
        *,
        max_items: int = MAX_ITEMS_DEFAULT,
        max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
        observe_batch: Callable[[int], None] | None = None,
        deadline_s: float | None = None,
        overlap_items_min: int = 1,
    ) -> None:
        if max_items < 1 or max_in_flight < 1 or overlap_items_min < 1:
            raise ValueError("max_items, max_in_flight and overlap_items_min must be at least 1")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self._deadline_s = deadline_s
        self._run_batch = run_batch
        self._max_items = max_items
        self._max_in_flight = max_in_flight
        self._overlap_items_min = overlap_items_min
        self._observe_batch = observe_batch
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT], float]] = []  # (item, answer, submitted at)
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: ItemT) -> ResultT:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._queue.append((item, future, loop.time() if self._deadline_s is not None else 0.0))
        self._schedule()
        return await future

    def _slot_free(self) -> bool:
        if self._in_flight == 0:
            return True
        return self._in_flight < self._max_in_flight and len(self._queue) >= self._overlap_items_min

    def _schedule(self) -> None:
        if self._scheduled or not self._queue or not self._slot_free():
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        # callers cancelled while queued, and items past their deadline, are dropped before anything is sent
        self._queue = [entry for entry in self._queue if not entry[1].done()]
        if self._deadline_s is not None:
            self._expire(asyncio.get_running_loop().time() - self._deadline_s)
        while self._queue and self._slot_free():
            batch, self._queue = self._queue[: self._max_items], self._queue[self._max_items :]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _expire(self, submitted_before: float) -> None:
        kept = []
        for entry in self._queue:
            if entry[2] <= submitted_before:
                entry[1].set_exception(TimeoutError("not sent within the deadline"))
            else:
                kept.append(entry)
        self._queue = kept

    async def _run(self, batch: list[tuple[ItemT, "asyncio.Future[ResultT]", float]]) -> None:
        try:
            if self._observe_batch is not None:
                self._observe_batch(len(batch))
            try:
                results = await self._run_within_deadline(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} items answered {len(results)} results")
            except BaseException as exc:  # every caller learns the batch failed, then it propagates
                for _, future, _submitted in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for (_, future, _submitted), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller went away (cancelled); its item was still processed
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._schedule()

    async def _run_within_deadline(
        self, batch: list[tuple[ItemT, "asyncio.Future[ResultT]", float]]
    ) -> Sequence[ResultT | BaseException]:
        items = [item for item, _, _ in batch]
        if self._deadline_s is None:
            return await self._run_batch(items)
        async with asyncio.timeout_at(min(submitted for _, _, submitted in batch) + self._deadline_s):
            return await self._run_batch(items)
