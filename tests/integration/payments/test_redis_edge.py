"""The Redis edge on a real Redis: concurrent leases and rate checks share pipelines, and each caller still
gets the answer it would get alone; an unreachable Redis degrades open at once."""

import asyncio
import socket
import time
import uuid

import redis.asyncio as redis_asyncio

from payplane.adapters.redis_edge import Lease, LeaseState, RedisEdge, lease_name
from tests.integration.conftest import Infra


async def test_concurrent_leases_each_get_their_own_answer(infra: Infra) -> None:
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    client = f"cli_{uuid.uuid4().hex[:12]}"
    try:
        keys = [f"k{i}" for i in range(10)]
        asks = [edge.lease(client, k, "fp-a") for k in keys]
        asks += [edge.lease(client, k, "fp-a") for k in keys[:5]]  # the same request again: in flight
        asks += [edge.lease(client, k, "fp-b") for k in keys[5:]]  # the same key with another body
        leases = await asyncio.gather(*asks)

        assert [lease.state for lease in leases[:10]] == [LeaseState.ACQUIRED] * 10
        assert [lease.state for lease in leases[10:15]] == [LeaseState.HELD_SAME_BODY] * 5
        assert [lease.state for lease in leases[15:]] == [LeaseState.HELD_OTHER_BODY] * 5
        assert len({lease.token for lease in leases[:10]}) == 10

        await edge.release(leases[0])  # a refusal frees its key at once
        assert (await edge.lease(client, keys[0], "fp-c")).state is LeaseState.ACQUIRED
    finally:
        await edge.close()


async def test_concurrent_rate_checks_count_like_sequential_ones(infra: Infra) -> None:
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    try:
        alone, together = f"cli_{uuid.uuid4().hex[:12]}", f"cli_{uuid.uuid4().hex[:12]}"
        sequential = [(await edge.admit(alone, 1.0, 5)).rate for _ in range(12)]
        concurrent = [a.rate for a in await asyncio.gather(*(edge.admit(together, 1.0, 5) for _ in range(12)))]
        assert sum(d.allowed for d in sequential) == sum(d.allowed for d in concurrent) == 6  # burst + 1
        refused = [d for d in concurrent if not d.allowed]
        assert all(0 < d.retry_after_s <= 1.0 for d in refused)
    finally:
        await edge.close()


async def test_admissions_check_the_rate_and_take_the_lease_in_one_round_trip(infra: Infra) -> None:
    """What the gateway asks for every POST: each concurrent admission gets the rate decision and the
    lease it would get alone, and a request the rate check refuses takes no lease."""
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    client = f"cli_{uuid.uuid4().hex[:12]}"
    try:
        keys = [f"k{i}" for i in range(4)]
        asks = [edge.admit(client, 1.0, 4, (k, "fp-a")) for k in keys]  # burst 4: 5 pass, one left after these
        asks.append(edge.admit(client, 1.0, 4, (keys[0], "fp-a")))  # the same request again: in flight
        asks.append(edge.admit(client, 1.0, 4, (keys[1], "fp-b")))  # refused by the rate check
        asks.append(edge.admit(client, 1.0, 4, ("k-late", "fp-a")))  # refused too: no lease taken
        first = await asyncio.gather(*asks)

        assert [a.rate.allowed for a in first] == [True] * 5 + [False] * 2
        assert [a.lease.state if a.lease else None for a in first[:5]] == [LeaseState.ACQUIRED] * 4 + [
            LeaseState.HELD_SAME_BODY
        ]
        assert (first[5].lease, first[6].lease) == (None, None)
        assert all(0 < a.rate.retry_after_s <= 1.0 for a in first[5:])

        unlimited = await edge.admit(client, 0.0, 0, ("k-late", "fp-c"))  # the key was not taken above
        other = await edge.admit(client, 0.0, 0, (keys[1], "fp-b"))
        plain = await edge.admit(client, 0.0, 0)
        assert unlimited.lease is not None
        assert unlimited.lease.state is LeaseState.ACQUIRED
        assert other.lease is not None
        assert other.lease.state is LeaseState.HELD_OTHER_BODY
        assert (plain.rate.allowed, plain.lease) == (True, None)

        assert first[0].lease is not None
        await edge.release(first[0].lease)  # the worker frees a refused request's key, token and all
        again = await edge.admit(client, 0.0, 0, (keys[0], "fp-d"))
        assert again.lease is not None
        assert again.lease.state is LeaseState.ACQUIRED
    finally:
        await edge.close()


async def test_a_batch_of_admissions_answers_each_as_if_alone(infra: Infra) -> None:
    """``admit_many`` (a gateway batch's one round trip): in order, a client's requests count one by one,
    a key asked twice finds its own lease held, and a refused request takes no lease."""
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    busy, other = f"cli_{uuid.uuid4().hex[:12]}", f"cli_{uuid.uuid4().hex[:12]}"
    try:
        answers = await edge.admit_many(
            1.0,
            2,
            [
                (busy, ("k1", "fp-a")),
                (other, ("k1", "fp-a")),  # another client's key of the same name: its own
                (busy, ("k1", "fp-a")),  # the same request again: in flight
                (busy, ("k2", "fp-b")),
                (busy, ("k3", "fp-c")),  # past the burst: refused
            ],
        )
        assert [a.rate.allowed for a in answers] == [True, True, True, True, False]
        assert [a.lease.state if a.lease else None for a in answers] == [
            LeaseState.ACQUIRED,
            LeaseState.ACQUIRED,
            LeaseState.HELD_SAME_BODY,
            LeaseState.ACQUIRED,
            None,
        ]
        later = await edge.admit(busy, 0.0, 0, ("k3", "fp-c"))
        assert later.lease is not None
        assert later.lease.state is LeaseState.ACQUIRED  # the refused request left its key free
    finally:
        await edge.close()


async def test_admissions_load_their_script_into_a_redis_that_lost_it(infra: Infra) -> None:
    """Admissions name their script by its SHA-1; a Redis that restarted or flushed its scripts gets it
    again, and each admission still runs exactly once (counted once by the rate check, one lease)."""
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    raw = redis_asyncio.from_url(infra["PAYPLANE_REDIS_URL"])
    client = f"cli_{uuid.uuid4().hex[:12]}"
    try:
        await raw.script_flush()
        first = await asyncio.gather(*(edge.admit(client, 1.0, 2, (f"k{i}", "fp-a")) for i in range(4)))
        await raw.script_flush()
        second = await edge.admit(client, 1.0, 2, ("k0", "fp-a"))

        assert [a.rate.allowed for a in first] == [True, True, True, False]  # burst 2: three pass
        assert [a.lease.state if a.lease else None for a in first] == [LeaseState.ACQUIRED] * 3 + [None]
        assert (second.rate.allowed, second.lease) == (False, None)  # not counted twice, nor degraded open
    finally:
        await raw.aclose()
        await edge.close()


async def test_a_batch_loads_its_script_into_a_redis_that_lost_it(infra: Infra) -> None:
    """``admit_many`` after a script flush: the script is loaded again and each request still counts once."""
    edge = RedisEdge(infra["PAYPLANE_REDIS_URL"])
    raw = redis_asyncio.from_url(infra["PAYPLANE_REDIS_URL"])
    first_client, second_client = f"cli_{uuid.uuid4().hex[:12]}", f"cli_{uuid.uuid4().hex[:12]}"
    try:
        await raw.script_flush()
        asks = [(first_client, (f"k{i}", "fp-a")) for i in range(4)] + [(second_client, ("k0", "fp-a"))]
        answers = await edge.admit_many(1.0, 2, asks)
        await raw.script_flush()
        again = await edge.admit_many(1.0, 2, [(first_client, ("k9", "fp-a"))])

        assert [a.rate.allowed for a in answers] == [True, True, True, False, True]  # burst 2: three pass
        assert [a.lease.state if a.lease else None for a in answers] == [
            *[LeaseState.ACQUIRED] * 3,
            None,
            LeaseState.ACQUIRED,
        ]
        assert (again[0].rate.allowed, again[0].lease) == (False, None)  # not counted twice, nor degraded open
        assert await raw.exists(lease_name(first_client, "k3")) == 0  # the refused request took no lease
    finally:
        await raw.aclose()
        await edge.close()


async def test_an_unreachable_redis_degrades_open_without_waiting() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    edge = RedisEdge(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        leases = await asyncio.gather(*(edge.lease("cli_x", f"k{i}", "fp") for i in range(5)))
        rates = [a.rate for a in await asyncio.gather(*(edge.admit("cli_x", 1.0, 1) for _ in range(5)))]
        admissions = await asyncio.gather(*(edge.admit("cli_x", 1.0, 1, (f"k{i}", "fp")) for i in range(5)))
        admissions += await edge.admit_many(1.0, 1, [("cli_x", (f"b{i}", "fp")) for i in range(5)])
        assert {lease.state for lease in leases} == {LeaseState.UNAVAILABLE}
        assert all(d.allowed for d in rates)
        assert all(a.rate.allowed and a.lease == Lease(LeaseState.UNAVAILABLE) for a in admissions)
        assert time.monotonic() - started < 2.0
    finally:
        await edge.close()
