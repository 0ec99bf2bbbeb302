"""GroupCommit: concurrent callers share batches, each gets its own answer, failures reach every caller."""

import asyncio
from collections.abc import Sequence

import pytest

from payplane.platform.group_commit import GroupCommit


class Recorder:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold

    async def double(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.hold is not None:
            await self.hold.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]


async def test_callers_of_one_turn_share_a_batch_and_get_their_own_answers() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.double, max_items=100, max_in_flight=1)
    results = await asyncio.gather(*(commit.submit(i) for i in range(10)), return_exceptions=True)
    assert recorder.batches == [list(range(10))]
    for i, result in enumerate(results):
        if i % 2:
            assert isinstance(result, ValueError)
            assert str(result) == f"odd {i}"
        else:
            assert result == i * 2


async def test_callers_queue_while_every_slot_is_busy_and_batches_respect_max_items() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    commit = GroupCommit(recorder.double, max_items=3, max_in_flight=1)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0.01)  # batch [0] is running and holds the only slot
    rest = [asyncio.ensure_future(commit.submit(i)) for i in range(2, 16, 2)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0]]  # the others wait for the slot
    hold.set()
    assert await first == 0
    assert [await f for f in rest] == [i * 2 for i in range(2, 16, 2)]
    assert recorder.batches == [[0], [2, 4, 6], [8, 10, 12], [14]]


async def test_a_failing_batch_fails_each_of_its_callers_and_later_batches_still_run() -> None:
    calls: list[list[int]] = []

    async def flaky(items: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return list(items)

    commit = GroupCommit(flaky, max_in_flight=1)
    failed = await asyncio.gather(*(commit.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in failed)
    assert await commit.submit(7) == 7


async def test_a_wrong_number_of_results_fails_the_callers_instead_of_hanging_them() -> None:
    async def short(items: Sequence[int]) -> list[int | BaseException]:
        return list(items)[:-1]

    commit = GroupCommit(short)
    results = await asyncio.wait_for(asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True), 1)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_caller_cancelled_while_queued_is_never_sent() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    commit = GroupCommit(recorder.double, max_in_flight=1)
    running = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(commit.submit(2))
    kept = asyncio.ensure_future(commit.submit(4))
    await asyncio.sleep(0.01)
    gone.cancel()
    hold.set()
    assert await running == 0
    assert await kept == 8
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.batches == [[0], [4]]


async def test_every_caller_is_answered_within_the_deadline_queueing_included() -> None:
    """A batch that runs past its oldest item's deadline is cancelled and its callers time out (a batch
    lives by its oldest item's deadline); the slot it held serves the next batch at once."""
    hold = asyncio.Event()
    recorder = Recorder(hold)
    commit = GroupCommit(recorder.double, max_in_flight=1, deadline_s=0.2)
    started_s = asyncio.get_running_loop().time()
    stuck = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0.01)
    expired = asyncio.ensure_future(commit.submit(2))  # queued behind the stuck batch
    await asyncio.sleep(0.1)
    late = asyncio.ensure_future(commit.submit(4))  # queued too: leaves with the item above
    with pytest.raises(TimeoutError):
        await stuck
    assert asyncio.get_running_loop().time() - started_s < 0.3
    with pytest.raises(TimeoutError):
        await expired  # sent as soon as the slot freed, with 0.01 s left
    hold.set()
    with pytest.raises(TimeoutError):
        await late
    assert await commit.submit(6) == 12  # the slot is free again
    assert recorder.batches == [[0], [2, 4], [6]]


async def test_an_item_queued_past_its_deadline_is_never_sent() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    commit = GroupCommit(recorder.double, max_in_flight=1, deadline_s=0.2)
    running = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(commit.submit(2))  # submitted in the same moment: expires with it
    with pytest.raises(TimeoutError):
        await running
    with pytest.raises(TimeoutError):
        await queued
    assert recorder.batches == [[0]]


async def test_a_second_batch_overlaps_the_first_only_once_enough_items_wait() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold)
    commit = GroupCommit(recorder.double, max_items=10, max_in_flight=2, overlap_items_min=3)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0.01)
    waiting = [asyncio.ensure_future(commit.submit(i)) for i in (2, 4)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0]]  # two waiting: they wait for the running batch
    waiting.append(asyncio.ensure_future(commit.submit(6)))
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0], [2, 4, 6]]  # the third makes a batch worth a second slot
    hold.set()
    assert [await f for f in (first, *waiting)] == [0, 4, 8, 12]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        GroupCommit(Recorder().double, max_items=0)
    with pytest.raises(ValueError, match="positive"):
        GroupCommit(Recorder().double, deadline_s=0)
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Recorder().double, overlap_items_min=0)
