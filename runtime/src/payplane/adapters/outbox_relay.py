"""The transactional outbox relay: rows committed to an ``outbox`` table reach Kafka promptly, at least once.

Writers insert outbox rows in the same transaction as their effects and ``NOTIFY`` the channel, so the
relay wakes at commit time instead of polling on a timer (a slow safety poll covers a lost
notification). Each round claims unpublished rows with ``FOR UPDATE SKIP LOCKED`` (several relays never
send the same row under normal operation), sends them, waits for the broker's acknowledgement, then
marks them published in the same transaction. A crash between the send and the commit re-sends those
rows, so every message carries an ``event_id`` header for consumers to deduplicate.
"""

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

NOTIFY_CHANNEL: Final = "payplane_outbox"
ROWS_PER_ROUND_MAX: Final = 1000
SAFETY_POLL_S: Final = 5.0
RETRY_BACKOFF_S_MAX: Final = 5.0

NOTIFY_SQL: Final = f"select pg_notify('{NOTIFY_CHANNEL}', '')"


class OutboxRelay:
    def __init__(self, dsn: str, bootstrap: str, *, source: str, safety_poll_s: float = SAFETY_POLL_S) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.source = source  # names this outbox in event ids, e.g. the shard database
        self.safety_poll_s = safety_poll_s
        self.published = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Relay until ``stop()``; connection failures are retried with bounded backoff."""
        backoff_s = 0.1
        while not self._stopping.is_set():
            try:
                await self._run_connected()
            # InterfaceError: the connection was closed under us (a network partition, a restart)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
                log.warning("outbox relay %s: %r; retrying in %.1fs", self.source, exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _run_connected(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=2)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            await producer.start()
            while not self._stopping.is_set():
                sent = await self._relay_round(conn, producer)
                if sent < ROWS_PER_ROUND_MAX:
                    await self._sleep_until_notified()
        finally:
            await producer.stop()
            conn.terminate()  # never waits on a connection that may already be gone

    async def _sleep_until_notified(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.safety_poll_s)
        self._wake.clear()

    async def _relay_round(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        async with conn.transaction():
            rows = await conn.fetch(
                "select id, topic, kafka_partition, message_key, payload from outbox where published_at is null"
                " order by id limit $1 for update skip locked",
                ROWS_PER_ROUND_MAX,
            )
            if not rows:
                return 0
            deliveries = [
                await producer.send(
                    row["topic"],
                    value=row["payload"],
                    key=row["message_key"],
                    partition=row["kafka_partition"],
                    headers=[("event_id", f"{self.source}:{row['id']}".encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*deliveries)
            await conn.execute(
                "update outbox set published_at = clock_timestamp() where id = any($1::bigint[])",
                [row["id"] for row in rows],
            )
        self.published += len(rows)
        return len(rows)
