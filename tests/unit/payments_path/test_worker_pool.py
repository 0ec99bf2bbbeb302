"""The gateway's worker pool: round-robin over replicas, one stub per channel until the channel changes
(an SVID rotation gives a new channel, which must get a new stub)."""

import grpc.aio

from payplane.gateway.app import WorkerPool


async def test_round_robin_with_one_stub_per_channel_until_it_changes() -> None:
    first = grpc.aio.insecure_channel("localhost:1")
    second = grpc.aio.insecure_channel("localhost:2")
    rotated = grpc.aio.insecure_channel("localhost:1")
    current = {"a": first}
    pool = WorkerPool([lambda: current["a"], lambda: second])
    try:
        a1, b1, a2, b2 = pool.stub(), pool.stub(), pool.stub(), pool.stub()
        assert a1 is a2
        assert b1 is b2
        assert a1 is not b1
        current["a"] = rotated  # the first target's SVID rotated: a new channel
        a3 = pool.stub()
        assert a3 is not a1
        assert pool.stub() is b1
        assert pool.stub() is a3
    finally:
        for channel in (first, second, rotated):
            await channel.close()
