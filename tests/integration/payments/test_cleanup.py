"""The payment worker's cleanup on real PostgreSQL: expired idempotency keys are deleted, batch after
batch until none is left (a backlog larger than a batch drains in one round); keys still valid stay."""

import asyncio

import asyncpg

from payplane.adapters.payments_store import CLEANUP_BATCH_MAX, PaymentsStore
from payplane.services.payment_worker import cleanup_round
from payplane_contracts.topics import RailTopics

BACKLOG = CLEANUP_BATCH_MAX * 2 + 500  # more than one batch


async def test_a_round_drains_every_expired_key_and_nothing_else(payments_dsn: str) -> None:
    conn = await asyncpg.connect(payments_dsn)
    store = await PaymentsStore.open(payments_dsn, RailTopics("cleanup-test"), partitions=2)
    try:
        await conn.execute(
            """insert into idempotency_keys (client_id, key, fingerprint, response, expires_at)
               select 'cli_cleanup', 'k' || g, 'fp', ''::bytea,
                      case when g <= $1 then now() - interval '1 minute' else now() + interval '1 hour' end
               from generate_series(1, $1 + 10) g""",
            BACKLOG,
        )

        await cleanup_round(store, asyncio.Event())

        assert await conn.fetchval("select count(*) from idempotency_keys where expires_at <= now()") == 0
        assert await conn.fetchval("select count(*) from idempotency_keys") == 10
    finally:
        await store.close()
        await conn.close()
