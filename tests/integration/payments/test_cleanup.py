"""The payment worker's cleanup on real PostgreSQL: expired idempotency keys and outbox rows published
longer ago than the retention are deleted, batch after batch until none is left (a backlog larger than
a batch drains in one round); keys still valid, recent published rows and unpublished rows stay."""

import asyncio

import asyncpg

from payplane.adapters.payments_store import CLEANUP_BATCH_MAX, OUTBOX_PUBLISHED_KEEP_S, PaymentsStore
from payplane.services.payment_worker import cleanup_round
from payplane_contracts.topics import RailTopics

BACKLOG = CLEANUP_BATCH_MAX * 2 + 500  # more than one batch of each


async def test_a_round_drains_expired_keys_and_old_published_outbox_rows_and_nothing_else(payments_dsn: str) -> None:
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
        await conn.execute(
            """insert into outbox (topic, payload, published_at)
               select 't', ''::bytea,
                      case when g <= $1 then now() - make_interval(secs => $2 + 60)
                           when g <= $1 + 10 then now() end
               from generate_series(1, $1 + 20) g""",
            BACKLOG,
            OUTBOX_PUBLISHED_KEEP_S,
        )

        await cleanup_round(store, asyncio.Event())

        assert await conn.fetchval("select count(*) from idempotency_keys where expires_at <= now()") == 0
        assert await conn.fetchval("select count(*) from idempotency_keys") == 10
        published = await conn.fetch("select published_at is not null as published, count(*) from outbox group by 1")
        assert {row["published"]: row["count"] for row in published} == {True: 10, False: 10}
    finally:
        await store.close()
        await conn.close()
