"""Redis at the payment path's edge: idempotency leases (the fast path) and per-client rate limiting.

Neither is the truth for money. An idempotency *lease* (``SET NX PX``) answers a concurrent duplicate
with 409 without touching PostgreSQL, and is released once the request is done; PostgreSQL's unique
key decides, so a flushed or unreachable Redis never allows a duplicate. Rate limiting is GCRA.
``admit`` does both in one script and one round trip: the gateway checks a request's rate and takes
its lease together, then hands the lease to the worker with the request (the worker takes a lease
itself, with ``lease``, only for callers that did not). When Redis is unreachable both degrade open
(requests go straight to PostgreSQL and are not rate-limited) and Redis is skipped for ``breaker_s`` so
an outage adds no latency.

Concurrent callers share round trips: the admissions (and the leases) asked for in the same moment
(``GroupCommit``), or a batch the gateway formed already (``admit_many``), are one script call per client
in one pipeline, each request getting its own answer; a client's requests count in order, so two
requests with one key in a batch behave as two in a row. A client's keys share a hash tag
(``payplane:{client}:…``), so one script's keys live on one Redis Cluster slot.
"""

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

import redis.asyncio as redis_asyncio
from redis.exceptions import NoScriptError, RedisError

from payplane.platform import random_ids
from payplane.platform.group_commit import GroupCommit

log = logging.getLogger(__name__)
ItemT = TypeVar("ItemT")

# A crashed request's lease frees its key after this long. The gateway gives up on a call after 10 s;
# a lease that outlives its request is harmless anyway (PostgreSQL's unique key decides).
LEASE_MS: Final = 10_000
SOCKET_TIMEOUT_S: Final = 0.25
BREAKER_S: Final = 1.0
BATCH_MAX: Final = 256  # commands per pipeline
BATCHES_IN_FLIGHT: Final = 2

# The rate check (GCRA, generic cell rate algorithm) and, once it passed, the idempotency lease (SET NX PX),
# for a client's requests in order, each answered as if it ran alone (a gateway batch's, or the concurrent
# callers' grouped by client, so that a script's keys stay in one Redis Cluster slot). KEYS[1] holds the
# client's theoretical arrival time in ms, KEYS[2..] the leases of the requests that ask for one, in order.
# ARGV: now_ms, emission interval ms (1000 / rate; 0: no limit), burst, lease lifetime ms, then each
# request's lease token ('' for a rate check alone). Returns {allowed, retry_after_ms, lease} per request,
# one after the other in a flat list, where lease is 1 (taken), the holder's token (held by another
# request), or 0 (not asked, or the request was refused). The rate key is read and written once.
_ADMIT: Final = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = nil
if interval > 0 then
  tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
end
local counted = false
local lease_key = 1
local out = {}
for i = 5, #ARGV do
  local allowed, retry, lease = 1, 0, 0
  if interval > 0 then
    if tat < now then tat = now end
    local allow_at = tat - interval * burst
    if now < allow_at then
      allowed, retry = 0, math.ceil(allow_at - now)
    else
      tat = tat + interval
      counted = true
    end
  end
  if ARGV[i] ~= '' then
    lease_key = lease_key + 1
    if allowed == 1 then
      local holder = redis.call('GET', KEYS[lease_key])
      if holder then
        lease = holder
      else
        redis.call('SET', KEYS[lease_key], ARGV[i], 'PX', ARGV[4])
        lease = 1
      end
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = retry
  out[#out + 1] = lease
end
if counted then
  redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now) + 1000)
end
return out
"""
_ADMIT_SHA1: Final = hashlib.sha1(_ADMIT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseState(StrEnum):
    ACQUIRED = "acquired"
    HELD_SAME_BODY = "held_same_body"  # a request with this key and this body is in flight
    HELD_OTHER_BODY = "held_other_body"  # … with another body
    UNAVAILABLE = "unavailable"  # Redis is down: PostgreSQL decides alone


@dataclass(frozen=True)
class Lease:
    state: LeaseState
    key: str = ""
    token: str = ""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class Admission:
    """A rate check's answer, and the lease taken with it (``None`` when none was asked or the rate
    check refused the request)."""

    rate: RateDecision
    lease: Lease | None = None


@dataclass(frozen=True)
class _LeaseAsk:
    name: str
    token: str
    fingerprint: str


@dataclass(frozen=True)
class _AdmitAsk:
    rate_key: str
    now_ms: int
    interval_ms: float  # 0: no rate limit
    burst: int
    lease: _LeaseAsk | None


def lease_name(client_id: str, key: str) -> str:
    """The Redis key of a client's idempotency lease (hash-tagged with the client, like its rate key)."""
    return f"payplane:{{{client_id}}}:idem:{key}"


def _rate_name(client_id: str) -> str:
    return f"payplane:{{{client_id}}}:rate"


def _holder_state(holder: bytes | str, fingerprint: str) -> LeaseState:
    """Whose request holds a taken lease: this body's (in flight: 409) or another's (422)."""
    text = holder.decode() if isinstance(holder, bytes) else str(holder)
    same = text.partition(":")[0] == fingerprint
    return LeaseState.HELD_SAME_BODY if same else LeaseState.HELD_OTHER_BODY


class RedisEdge:
    def __init__(self, url: str, breaker_s: float = BREAKER_S) -> None:
        self._client = redis_asyncio.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self._release = self._client.register_script(_RELEASE)
        self._breaker_s = breaker_s
        self._skip_until = 0.0
        self._leases: GroupCommit[_LeaseAsk, Lease] = GroupCommit(
            self._lease_batch, max_items=BATCH_MAX, max_in_flight=BATCHES_IN_FLIGHT
        )
        self._admissions: GroupCommit[_AdmitAsk, Admission] = GroupCommit(
            self._admit_batch, max_items=BATCH_MAX, max_in_flight=BATCHES_IN_FLIGHT
        )

    async def close(self) -> None:
        await self._client.aclose()

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: BaseException) -> None:
        if self._available():
            log.warning("redis unavailable (%r): degrading for %.1fs", exc, self._breaker_s)
        self._skip_until = time.monotonic() + self._breaker_s

    async def lease(self, client_id: str, key: str, fingerprint: str) -> Lease:
        if not self._available():
            return Lease(LeaseState.UNAVAILABLE)
        return await self._leases.submit(_lease_ask(client_id, key, fingerprint))

    async def _lease_batch(self, asks: Sequence[_LeaseAsk]) -> list[Lease]:
        """SET NX PX for every ask in one pipeline; then the holders of the keys already taken, in one MGET."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for ask in asks:
                pipe.set(ask.name, ask.token, nx=True, px=LEASE_MS)
            acquired = await pipe.execute()
            taken = [ask.name for ask, ok in zip(asks, acquired, strict=True) if not ok]
            holders = iter(await self._client.mget(taken) if taken else [])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [Lease(LeaseState.UNAVAILABLE)] * len(asks)
        leases = []
        for ask, ok in zip(asks, acquired, strict=True):
            if ok:
                leases.append(Lease(LeaseState.ACQUIRED, ask.name, ask.token))
                continue
            holder = next(holders)
            if holder is None:  # released in between: let PostgreSQL decide
                leases.append(Lease(LeaseState.UNAVAILABLE))
                continue
            leases.append(Lease(_holder_state(holder, ask.fingerprint)))
        return leases

    async def release(self, lease: Lease) -> None:
        if lease.state is not LeaseState.ACQUIRED:
            return
        try:
            await self._release(keys=[lease.key], args=[lease.token])
        except (RedisError, OSError) as exc:
            self._failed(exc)  # the lease expires on its own

    async def admit(
        self, client_id: str, per_second: float, burst: int, idempotency: tuple[str, str] | None = None
    ) -> Admission:
        """The rate check and, if the request passed it and carries ``idempotency`` (key, fingerprint),
        its lease: one script, one round trip (shared with the concurrent callers' pipeline). Without
        ``idempotency`` it is the rate check alone."""
        if not self._available():
            return _degraded(idempotency is not None)
        if per_second <= 0 and idempotency is None:
            return Admission(RateDecision(True))
        return await self._admissions.submit(_admit_ask(client_id, per_second, burst, idempotency))

    async def admit_many(
        self, per_second: float, burst: int, requests: Sequence[tuple[str, tuple[str, str]]]
    ) -> list[Admission]:
        """``admit`` for several requests (client id, (key, fingerprint)) that already form a batch: one
        script call per client (a client's requests in order, each answered as if it ran alone), all in
        one pipeline that leaves at once instead of joining the concurrent callers' (one turn of the event
        loop later). The answers are in order."""
        if not self._available():
            return [_degraded(True)] * len(requests)
        return await self._admit_batch([_admit_ask(client, per_second, burst, idem) for client, idem in requests])

    async def _admit_batch(self, asks: Sequence[_AdmitAsk]) -> list[Admission]:
        """The admission script once per client (with its limits) for every ask, in one pipeline: a
        client's requests count one by one, in order, and two requests with one key find each other's
        lease. The answers are in order."""
        groups: dict[tuple[str, float, int], list[int]] = {}  # the positions of each client's asks, in order
        for n, ask in enumerate(asks):
            groups.setdefault((ask.rate_key, ask.interval_ms, ask.burst), []).append(n)
        positions = list(groups.values())

        def run(some: Sequence[list[int]]) -> Awaitable[list[Any]]:
            return self._run_admissions([[asks[n] for n in group] for group in some])

        try:
            answers = await self._run_scripts(_ADMIT, run, positions)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [_degraded(ask.lease is not None) for ask in asks]
        by_position: dict[int, Admission] = {}
        for group, flat in zip(positions, answers, strict=True):
            for i, n in enumerate(group):
                by_position[n] = _admission(asks[n], flat[3 * i : 3 * i + 3])
        return [by_position[n] for n in range(len(asks))]

    async def _run_scripts(
        self, script: str, run: Callable[[Sequence[ItemT]], Awaitable[list[Any]]], items: Sequence[ItemT]
    ) -> list[Any]:
        """``run`` (one pipeline of EVALSHA, an item's error its answer) over ``items``; a new or flushed
        Redis gets ``script`` once, then only the items it refused run again, so none runs twice. Raises
        the first item's error that remains."""
        answers = await run(items)
        unknown = [n for n, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if unknown:
            await self._client.script_load(script)
            for n, answer in zip(unknown, await run([items[n] for n in unknown]), strict=True):
                answers[n] = answer
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    async def _run_admissions(self, groups: Sequence[Sequence[_AdmitAsk]]) -> list[Any]:
        """One EVALSHA per group (one client's asks, same limits) in one pipeline (the script's 1 KB travels
        and is hashed only when Redis lacks it); a group's error is its answer, so none runs twice."""
        pipe = self._client.pipeline(transaction=False)
        for group in groups:
            first = group[0]
            keys = [first.rate_key, *(ask.lease.name for ask in group if ask.lease is not None)]
            tokens = [ask.lease.token if ask.lease is not None else "" for ask in group]
            pipe.evalsha(_ADMIT_SHA1, len(keys), *keys, first.now_ms, first.interval_ms, first.burst, LEASE_MS, *tokens)
        return list(await pipe.execute(raise_on_error=False))


def _admit_ask(client_id: str, per_second: float, burst: int, idempotency: tuple[str, str] | None) -> _AdmitAsk:
    lease = _lease_ask(client_id, *idempotency) if idempotency else None
    interval_ms = 1000.0 / per_second if per_second > 0 else 0.0
    return _AdmitAsk(_rate_name(client_id), int(time.time() * 1000), interval_ms, burst, lease)


def _lease_ask(client_id: str, key: str, fingerprint: str) -> _LeaseAsk:
    return _LeaseAsk(lease_name(client_id, key), f"{fingerprint}:{random_ids.token_hex(8)}", fingerprint)


def _degraded(with_lease: bool) -> Admission:
    """Redis is unreachable: allow, and let PostgreSQL alone decide about the key."""
    return Admission(RateDecision(True), Lease(LeaseState.UNAVAILABLE) if with_lease else None)


def _admission(ask: _AdmitAsk, answer: Sequence[Any]) -> Admission:
    """The script's answer {allowed, retry_after_ms, lease} for one ask."""
    allowed, retry_ms, lease_answer = answer
    rate = RateDecision(bool(allowed), int(retry_ms) / 1000.0)
    if ask.lease is None or not allowed:
        return Admission(rate)
    if lease_answer == 1:
        return Admission(rate, Lease(LeaseState.ACQUIRED, ask.lease.name, ask.lease.token))
    return Admission(rate, Lease(_holder_state(lease_answer, ask.lease.fingerprint)))
