"""Redis at the payment path's edge: idempotency leases (the fast path) and per-client rate limiting.

Neither is the truth for money. An idempotency *lease* (``SET NX PX``) answers a concurrent duplicate
with 409 without touching PostgreSQL, and is released once the request is done; PostgreSQL's unique
key decides, so a flushed or unreachable Redis never allows a duplicate. Rate limiting is GCRA in one
Lua round trip. When Redis is unreachable both degrade open (requests go straight to PostgreSQL and
are not rate-limited) and Redis is skipped for ``breaker_s`` so an outage adds no latency.

Concurrent callers share round trips: the leases (and the rate checks) asked for in the same moment
are sent as one pipeline (``GroupCommit``), each caller getting its own answer. Commands of a
pipeline run in order, so two requests with one key in a batch behave as two in a row.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from payplane.platform import random_ids
from payplane.platform.group_commit import GroupCommit

log = logging.getLogger(__name__)

# A crashed request's lease frees its key after this long. The gateway gives up on a call after 10 s;
# a lease that outlives its request is harmless anyway (PostgreSQL's unique key decides).
LEASE_MS: Final = 10_000
SOCKET_TIMEOUT_S: Final = 0.25
BREAKER_S: Final = 1.0
BATCH_MAX: Final = 256  # commands per pipeline
BATCHES_IN_FLIGHT: Final = 2

# GCRA (generic cell rate algorithm): one key per client holding the theoretical arrival time (ms).
# ARGV: now_ms, emission interval ms (1000 / rate), burst. Returns {allowed, retry_after_ms}.
_GCRA: Final = """
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
if tat < now then tat = now end
local allow_at = tat - interval * burst
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"""
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
class _LeaseAsk:
    name: str
    token: str
    fingerprint: str


@dataclass(frozen=True)
class _RateAsk:
    key: str
    now_ms: int
    interval_ms: float
    burst: int


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
        self._rates: GroupCommit[_RateAsk, RateDecision] = GroupCommit(
            self._rate_batch, max_items=BATCH_MAX, max_in_flight=BATCHES_IN_FLIGHT
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
        token = f"{fingerprint}:{random_ids.token_hex(8)}"
        return await self._leases.submit(_LeaseAsk(f"payplane:idem:{client_id}:{key}", token, fingerprint))

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
            text = holder.decode() if isinstance(holder, bytes) else str(holder)
            same = text.partition(":")[0] == ask.fingerprint
            leases.append(Lease(LeaseState.HELD_SAME_BODY if same else LeaseState.HELD_OTHER_BODY))
        return leases

    async def release(self, lease: Lease) -> None:
        if lease.state is not LeaseState.ACQUIRED:
            return
        try:
            await self._release(keys=[lease.key], args=[lease.token])
        except (RedisError, OSError) as exc:
            self._failed(exc)  # the lease expires on its own

    async def rate(self, client_id: str, per_second: float, burst: int) -> RateDecision:
        if per_second <= 0 or not self._available():
            return RateDecision(True)
        ask = _RateAsk(f"payplane:rate:{client_id}", int(time.time() * 1000), 1000.0 / per_second, burst)
        return await self._rates.submit(ask)

    async def _rate_batch(self, asks: Sequence[_RateAsk]) -> list[RateDecision]:
        """The GCRA script for every ask, in one pipeline (in order: a client's requests count one by one)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for ask in asks:  # EVAL, not EVALSHA: a pipeline of scripts would first ask SCRIPT EXISTS
                pipe.eval(_GCRA, 1, ask.key, ask.now_ms, ask.interval_ms, ask.burst)
            answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [RateDecision(True)] * len(asks)
        return [RateDecision(bool(allowed), int(retry_ms) / 1000.0) for allowed, retry_ms in answers]
