"""Real Redis: ``SET NX PX`` claims exactly once, expires, and is atomic under contention."""

import asyncio
import uuid

import redis.asyncio as aioredis

from tests.integration.conftest import Infra


async def test_set_nx_px_claim_semantics(infra: Infra) -> None:
    client = aioredis.from_url(infra["PAYPLANE_REDIS_URL"])
    key = f"smoke:claim:{uuid.uuid4().hex}"
    try:
        info = await client.info("server")
        assert str(info["redis_version"]).startswith("7.")

        assert await client.set(key, "owner-a", nx=True, px=300) is True
        assert await client.set(key, "owner-b", nx=True, px=300) is None
        assert await client.get(key) == b"owner-a"
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= 300

        await asyncio.sleep(0.4)
        assert await client.get(key) is None
        assert await client.set(key, "owner-b", nx=True, px=300) is True
    finally:
        await client.delete(key)
        await client.aclose()


async def test_concurrent_claims_have_exactly_one_winner(infra: Infra) -> None:
    clients = [aioredis.from_url(infra["PAYPLANE_REDIS_URL"]) for _ in range(20)]
    key = f"smoke:race:{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(*(c.set(key, f"owner-{i}", nx=True, px=5000) for i, c in enumerate(clients)))
        assert sum(1 for r in results if r) == 1
    finally:
        await clients[0].delete(key)
        for c in clients:
            await c.aclose()
