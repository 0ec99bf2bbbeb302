"""The transactional outbox relay: rows committed to an ``outbox`` table reach Kafka promptly, at least once.

Writers insert outbox rows in the same transaction as their effects and ``NOTIFY`` the channel, so the
relay wakes at commit time instead of polling on a timer (a slow safety poll covers a lost
notification). Each round claims the oldest unsent rows with ``FOR UPDATE SKIP LOCKED`` (several relays
never send the same row under normal operation), sends them, waits for the broker's acknowledgement,
then, in the same transaction, deletes them (the payments outbox: the table holds only what is still to
be sent) or marks them published (a ledger shard's outbox, which has a ``published_at`` column and keeps
the outcomes it sent as the shard's record for ``sent_keep_s``, an hour by default: after its rounds the
relay deletes the rows sent longer ago than that, a bounded batch at a time, and looks again a minute
after it found none). A crash between the send and the commit re-sends those
rows, so every message carries an ``event_id`` header for consumers to deduplicate, and the
``traceparent`` of the request that wrote the row when the outbox stores one.

The relay is told which kind of outbox it relays (``OutboxKind``) and never infers it from the table: a
relay that started while its database was being migrated once read the columns before the migration
committed and the table after, took a ledger shard's outbox for a payments outbox, and sent packed rows
as single messages. It waits, retrying, until the table has the columns its kind needs.

The relay reports the creation time of the oldest row it knows to be unpublished (``oldest_unpublished_at_s``,
None when drained) to an observer, which turns it into the outbox-age gauge: it is refreshed by every
round and by every (re)connection, so it keeps growing while Kafka is unreachable.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final, NamedTuple, Protocol

import asyncpg
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from asyncpg.exceptions import InternalClientError

from payplane.adapters.postgres_sessions import KEY_LOOKUP_SESSION

log = logging.getLogger(__name__)

NOTIFY_CHANNEL: Final = "payplane_outbox"
ROWS_PER_ROUND_MAX: Final = 1000
SAFETY_POLL_S: Final = 5.0
# A round costs a transaction and a produce request whatever its size. At moderate rates every commit
# would otherwise get a round of its own; starting rounds at most this often sends several commits' rows
# together, for at most this much added latency (a full round starts the next one at once).
ROUND_INTERVAL_MIN_S: Final = 0.020
RETRY_BACKOFF_S_MAX: Final = 5.0
PRODUCER_START_TIMEOUT_S: Final = 60.0  # above the client's own request timeout (40 s): only a start that hangs
RECORD_BATCH_BYTES_MAX: Final = 512 * 1024  # per topic partition; below the client's 1 MiB request limit
_PARTITIONER: Final = DefaultPartitioner()

NOTIFY_SQL: Final = f"select pg_notify('{NOTIFY_CHANNEL}', '')"
OLDEST_UNPUBLISHED_SQL: Final = "select extract(epoch from created_at)::float8 from outbox {unsent} order by id limit 1"
# One statement, so one snapshot: the columns of a table a migration is creating are all there or none is.
_OUTBOX_COLUMNS_SQL: Final = (
    "select coalesce(array_agg(column_name::text), '{}') from information_schema.columns"
    " where table_schema = current_schema() and table_name = 'outbox'"
)

_SELECT: Final = (
    "select id, topic, kafka_partition, message_key, payload, {trace} as traceparent, {packed} as packed,"
    " extract(epoch from created_at)::float8 as created_at_s"
    " from outbox {unsent} order by id limit $1 for update skip locked"
)
_DELETE_SENT: Final = "delete from outbox where id = any($1::bigint[])"
_MARK_SENT: Final = "update outbox set published_at = clock_timestamp() where id = any($1::bigint[])"
# A kept outbox (one with published_at) holds what it sent this long, then the relay deletes it: without
# that the table would grow by a row per writer batch for ever.
SENT_KEEP_S_DEFAULT: Final = 3600.0
PRUNE_INTERVAL_S: Final = 60.0  # how often the relay looks for sent rows to delete, once it has caught up
PRUNE_ROWS_MAX: Final = 200  # rows per delete: a packed row holds a writer batch, up to a few thousand messages
# Rows are sent in id order, so the oldest rows by id are the ones sent longest ago: the delete looks at
# the first rows of the primary key only (no index on published_at, no scan of what is kept).
_PRUNE_SENT: Final = (
    "with gone as (delete from outbox where id in ("
    " select id from (select id, published_at from outbox order by id limit $2) as oldest"
    " where published_at < clock_timestamp() - make_interval(secs => $1)) returning 1)"
    " select count(*) from gone"
)
PACKED_ROWS_PER_ROUND_MAX: Final = 10  # a packed row holds one writer batch (up to a few thousand messages)

_PACKED: Final = msgspec.msgpack.Encoder()
_UNPACK: Final = msgspec.msgpack.Decoder(list[tuple[bytes | None, bytes]])


def pack_messages(messages: Sequence[tuple[bytes | None, bytes]]) -> bytes:
    """The payload of a packed outbox row: several (key, value) messages for the row's topic, in order."""
    return _PACKED.encode(messages)


def unpack_messages(payload: bytes) -> list[tuple[bytes | None, bytes]]:
    return _UNPACK.decode(payload)


class OutboxKind(Enum):
    """What an outbox's rows hold and what becomes of a row once sent."""

    PAYMENTS = "payments"  # a message per row, with its request's trace context; a sent row is deleted
    LEDGER = "ledger"  # a writer batch's messages packed in a row; a sent row is kept, marked, for a while

    @property
    def required_columns(self) -> frozenset[str]:
        return _REQUIRED_COLUMNS[self]


_REQUIRED_COLUMNS: Final = {
    OutboxKind.PAYMENTS: frozenset({"traceparent"}),
    OutboxKind.LEDGER: frozenset({"packed", "published_at"}),
}


class OutboxNotReadyError(Exception):
    """The outbox table lacks what its kind needs: its database is not migrated (yet) to this release."""


class _Message(NamedTuple):
    row: asyncpg.Record
    key: bytes | None
    value: bytes
    event_id: bytes


def _messages(row: asyncpg.Record, source: str) -> list[_Message]:
    """A row's messages: itself, or those packed in it (event ids ``<source>:<row id>.<index>``)."""
    if not row["packed"]:
        return [_Message(row, row["message_key"], row["payload"], f"{source}:{row['id']}".encode())]
    return [
        _Message(row, key, value, f"{source}:{row['id']}.{index}".encode())
        for index, (key, value) in enumerate(unpack_messages(row["payload"]))
    ]


class OutboxObserver(Protocol):
    def oldest_unpublished(self, created_at_s: float | None) -> None: ...


class _IgnoreOutbox:
    def oldest_unpublished(self, created_at_s: float | None) -> None:
        pass


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        bootstrap: str,
        *,
        kind: OutboxKind,
        source: str,
        safety_poll_s: float = SAFETY_POLL_S,
        observer: OutboxObserver | None = None,
        sent_keep_s: float = SENT_KEEP_S_DEFAULT,
    ) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.kind = kind
        self.source = source  # names this outbox in event ids, e.g. the shard database
        self.safety_poll_s = safety_poll_s
        self.published = 0
        self.pruned = 0  # sent rows deleted from a kept outbox
        self.sent_keep_s = sent_keep_s
        # a ledger outbox packs a batch in a row and keeps sent rows, marked; a payments outbox carries trace
        # context and deletes sent rows
        self._keeping = kind is OutboxKind.LEDGER
        self._unsent = "where published_at is null" if self._keeping else ""
        self._select = _SELECT.format(
            trace="null::text" if self._keeping else "traceparent",
            packed="packed" if self._keeping else "false",
            unsent=self._unsent,
        )
        self._done = _MARK_SENT if self._keeping else _DELETE_SENT
        self._rows_per_round = PACKED_ROWS_PER_ROUND_MAX if self._keeping else ROWS_PER_ROUND_MAX
        self._prune_due_s = 0.0  # monotonic time of the next look for sent rows to delete
        self._pruned_this_pass = 0
        self.observer: OutboxObserver = observer or _IgnoreOutbox()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Relay until ``stop()``; connection failures are retried with bounded backoff."""
        backoff_s = 0.1
        while not self._stopping.is_set():
            try:
                await self._run_connected()
            # InterfaceError: the connection was closed under us (a network partition, a restart)
            except (
                TimeoutError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                InternalClientError,
                KafkaError,
                OutboxNotReadyError,
            ) as exc:
                log.warning("outbox relay %s: %r; retrying in %.1fs", self.source, exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _run_connected(self) -> None:
        # A delete or mark of sent rows lost in a database crash only means a re-send, which consumers
        # deduplicate by event id: the relay's commits need not wait for the WAL flush. Both are key
        # lookups in a fast-changing table (postgres_sessions).
        conn = await asyncpg.connect(
            self.dsn, timeout=5, server_settings={"synchronous_commit": "off", **KEY_LOOKUP_SESSION}
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=RECORD_BATCH_BYTES_MAX,
        )
        try:
            missing = self.kind.required_columns - set(await conn.fetchval(_OUTBOX_COLUMNS_SQL))
            if missing:
                raise OutboxNotReadyError(
                    f"the outbox lacks {', '.join(sorted(missing))}: its database is not migrated to this release yet"
                )
            self.observer.oldest_unpublished(await conn.fetchval(OLDEST_UNPUBLISHED_SQL.format(unsent=self._unsent)))
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            # bounded: an idempotent producer's start retries its producer id request without end or log
            await asyncio.wait_for(producer.start(), PRODUCER_START_TIMEOUT_S)
            while not self._stopping.is_set():
                round_started_s = time.monotonic()
                self._wake.clear()  # the round sees every row committed before it starts
                rows = await self._relay_round(conn, producer)
                more_to_prune = await self._prune_if_due(conn)
                if rows < self._rows_per_round:
                    if not more_to_prune:
                        await self._sleep_until_notified()
                    # rows committed meanwhile wait for the interval's end and go out together
                    await asyncio.sleep(max(0.0, round_started_s + ROUND_INTERVAL_MIN_S - time.monotonic()))
        finally:
            await producer.stop()
            conn.terminate()  # never waits on a connection that may already be gone

    async def _prune_if_due(self, conn: asyncpg.Connection) -> bool:
        """In a kept outbox, delete the rows sent more than ``sent_keep_s`` ago among the oldest
        PRUNE_ROWS_MAX, if it is time to look; True if some were (look again after the next round),
        else the next look is PRUNE_INTERVAL_S away."""
        if not self._keeping or time.monotonic() < self._prune_due_s:
            return False
        deleted = int(await conn.fetchval(_PRUNE_SENT, self.sent_keep_s, PRUNE_ROWS_MAX))
        self.pruned += deleted
        self._pruned_this_pass += deleted
        if deleted:
            return True
        self._prune_due_s = time.monotonic() + PRUNE_INTERVAL_S
        if self._pruned_this_pass:
            log.info(
                "outbox relay %s: deleted %d rows sent over %.0f s ago",
                self.source,
                self._pruned_this_pass,
                self.sent_keep_s,
            )
        self._pruned_this_pass = 0
        return False

    async def _sleep_until_notified(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.safety_poll_s)

    async def _relay_round(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """One round: claim up to a round's rows, send their messages, delete or mark the rows; returns the rows."""
        async with conn.transaction():
            rows = await conn.fetch(self._select, self._rows_per_round)
            if not rows:
                self.observer.oldest_unpublished(None)
                return 0
            self.observer.oldest_unpublished(rows[0]["created_at_s"])
            messages = [message for row in rows for message in _messages(row, self.source)]
            await asyncio.gather(*await self._send_batches(producer, messages))
            await conn.execute(self._done, [row["id"] for row in rows])
        self.published += len(messages)
        if len(rows) < self._rows_per_round:
            self.observer.oldest_unpublished(None)  # drained (rows written since then wake the next round)
        return len(rows)

    async def _send_batches(self, producer: AIOKafkaProducer, messages: list[_Message]) -> list[asyncio.Future[Any]]:
        """Queue ``messages`` as one record batch per topic partition, in order; returns the deliveries.

        ``send_batch`` costs a fraction of ``send`` per message (no future, no partitioner call, no
        accumulator lookup each). Rows without a Kafka partition go where ``send`` would put them: the
        client's default partitioner over the topic's partitions."""
        builders: dict[tuple[str, int], BatchBuilder] = {}
        partitions_of: dict[str, list[int]] = {}
        deliveries: list[asyncio.Future[Any]] = []
        for message in messages:
            topic = message.row["topic"]
            partition = message.row["kafka_partition"]
            if partition is None:
                if topic not in partitions_of:
                    partitions_of[topic] = sorted(await producer.partitions_for(topic))
                partition = _PARTITIONER(message.key, partitions_of[topic], partitions_of[topic])
            builder = builders.get((topic, partition))
            if builder is None or not self._append(builder, message):
                if builder is not None:  # full: it goes now, in order, and a new one takes the message
                    deliveries.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[(topic, partition)] = producer.create_batch()
                if not self._append(builder, message):
                    raise KafkaError(f"a message of outbox row {message.row['id']} does not fit in a record batch")
        for (topic, partition), builder in builders.items():
            deliveries.append(await producer.send_batch(builder, topic, partition=partition))
        return deliveries

    @staticmethod
    def _append(builder: BatchBuilder, message: _Message) -> bool:
        headers = [("event_id", message.event_id)]
        if message.row["traceparent"]:
            headers.append(("traceparent", message.row["traceparent"].encode()))
        return builder.append(timestamp=None, key=message.key, value=message.value, headers=headers) is not None
