"""The ledger writer's two edges: its shard database (asyncpg) and its commands topic (aiokafka).

Connection-level failures of either are raised as ``TransientError`` so the writer retries them; a
``FencedError`` passes through and stops the writer.
"""

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from payplane.adapters import ledger_store
from payplane.adapters.outbox_relay import pack_messages
from payplane.adapters.postgres_sessions import KEY_LOOKUP_SESSION
from payplane.ledger.batch import Forward
from payplane.ledger.codec import encode_outcome_fast, request_to_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.writer import CommandRecord, PartitionBatch, TransientError
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, TransferOutcome, encode_command
from payplane_contracts.partitions import ledger_partition_for_account
from payplane_contracts.topics import RailTopics

# The broker answers a fetch once it holds this many bytes of commands or after the wait, whichever comes
# first. A batch costs the writer and its database about a millisecond of CPU whatever its size, so a
# writer that applied every command as it arrived would spend most of its time on one-command batches at
# moderate rates; waiting gives batches of tens instead, and leaves the CPU to the accept path. The bytes
# set the wait by the rate: 48 KiB is about 30 ms of commands at the payment path's full load (~2,000
# payments/s, ~1.5 MB/s over a rail's partitions), where the settle budget is tight (accept→settled p99
# ≤ 250 ms), and about 60 ms at half of it, where the budget has room and the CPU is better spent on
# accepting (docs/benchmarks.md, "The writer's fetch waits for bytes"). A backlog fills a fetch at once.
FETCH_MIN_BYTES: Final = 48 * 1024
FETCH_MAX_WAIT_MS: Final = 60


_TRANSIENT_PG = (asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, OSError, asyncio.TimeoutError)


MEMO_ENTRIES_MAX = 500_000


def partition_lookup(partition_count: int) -> Callable[[str], int]:
    """Which ledger partition an account lives on, memoised (the writer asks several times per
    transfer; the hash itself is cheap, a Python-level call is not)."""
    return functools.lru_cache(maxsize=MEMO_ENTRIES_MAX)(
        functools.partial(ledger_partition_for_account, partition_count=partition_count)
    )


class PostgresLedgerStore:
    """The shard database, over two connections: one writes (batches, claims), one reads (loads), so the
    writer can load the next batch while the previous one commits."""

    def __init__(self, dsn: str, topics: RailTopics) -> None:
        self.dsn = dsn
        self.topics = topics
        self._conns: dict[str, asyncpg.Connection | None] = {"read": None, "write": None, "membership": None}

    @asynccontextmanager
    async def _connection(self, role: str = "write") -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = self._conns[role]
            if conn is None or conn.is_closed():
                conn = self._conns[role] = await asyncpg.connect(
                    self.dsn, timeout=5, server_settings=KEY_LOOKUP_SESSION
                )
            yield conn
        except _TRANSIENT_PG as exc:
            broken = self._conns[role]
            if broken is not None:
                broken.terminate()
            self._conns[role] = None
            raise TransientError(f"shard database: {exc!r}") from exc

    async def claim(self, partitions: list[int], writer_id: str) -> dict[int, int]:
        async with self._connection() as conn:
            return await ledger_store.claim_partitions(conn, partitions, writer_id)

    async def heartbeat(self, writer_id: str, partitions: str, lease_s: float) -> list[str]:
        """Renew this writer's membership; the live writers configured for the same ``partitions`` (own
        connection: it runs beside the batches)."""
        async with self._connection("membership") as conn:
            return await ledger_store.heartbeat(conn, writer_id, partitions, lease_s)

    async def partition_epochs(self, partitions: list[int]) -> dict[int, int]:
        async with self._connection("membership") as conn:
            return await ledger_store.partition_epochs(conn, partitions)

    async def leave(self, writer_id: str) -> None:
        async with self._connection("membership") as conn:
            await ledger_store.leave(conn, writer_id)

    async def positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        async with self._connection() as conn:
            return await ledger_store.consumed_positions(conn, topic, partitions)

    async def load(self, account_ids: set[str], transfer_ids: set[str], refusal_ids: set[str] | None = None) -> Ledger:
        async with self._connection("read") as conn:
            return await ledger_store.load_ledger(conn, account_ids, transfer_ids, refusal_ids)

    async def due_holds(self, partition: int, now_us: int, limit: int) -> list[str]:
        async with self._connection("read") as conn:
            return await ledger_store.due_holds(conn, partition, now_us, limit)

    def prepare(self, parts: Sequence[PartitionBatch], ledger: Ledger) -> ledger_store.BatchRows:
        """The batch's rows, copied out of ``ledger`` now (the writer goes on mutating it afterwards)."""
        return ledger_store.prepare_rows([self._outcome(part) for part in parts], ledger)

    def _outcome(self, part: PartitionBatch) -> ledger_store.BatchOutcome:
        return ledger_store.BatchOutcome(
            partition=part.partition,
            epoch=part.epoch,
            now_us=part.now_us,
            new_accounts=part.new_accounts,
            changes=part.changes,
            offsets={(part.next_offset[0], part.next_offset[1]): part.next_offset[2]} if part.next_offset else {},
            outbox=[*self._outcomes_row(part.outcomes), *self._forward_rows(part.forwards)],
            ids_assumed_new=part.ids_assumed_new,
        )

    def _outcomes_row(self, outcomes: list[TransferOutcome]) -> list[ledger_store.OutboxMessage]:
        """A batch's outcomes, packed in one outbox row (keyed by transfer id once the relay unpacks it)."""
        if not outcomes:
            return []
        messages = [(o.transfer_id.encode(), encode_outcome_fast(o)) for o in outcomes]
        return [ledger_store.OutboxMessage(self.topics.ledger_results, None, None, pack_messages(messages), True)]

    def _forward_rows(self, forwards: list[Forward]) -> list[ledger_store.OutboxMessage]:
        """Legs for other partitions: a row each, addressed to the ledger partition that applies it."""
        return [
            ledger_store.OutboxMessage(
                self.topics.ledger_commands,
                f.partition,
                f.request.credit_account_id.encode(),
                encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(f.request))),
            )
            for f in forwards
        ]

    async def write(self, prepared: object) -> None:
        if not isinstance(prepared, ledger_store.BatchRows):
            raise TypeError(f"write() takes what prepare() returned, not {type(prepared).__name__}")
        async with self._connection() as conn:
            await ledger_store.write_rows(conn, prepared)

    def backend_pids(self) -> list[int]:
        """The PostgreSQL server processes of the open connections (benchmarks read their CPU time)."""
        return [conn.get_server_pid() for conn in self._conns.values() if conn is not None and not conn.is_closed()]

    async def close(self) -> None:
        for conn in self._conns.values():
            if conn is not None:
                await conn.close()
        self._conns = {"read": None, "write": None, "membership": None}


class KafkaCommandLog:
    """The commands topic, assigned by partition (no consumer group: positions live in PostgreSQL)."""

    def __init__(self, bootstrap: str, topics: RailTopics, consumer_role: str, partitions: list[int]) -> None:
        self.topic = topics.ledger_commands
        self.dead_letter_topic = topics.dead_letters(consumer_role)
        self.partitions = partitions
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)

    async def start(self) -> None:
        await self.consumer.start()
        await self.producer.start()
        self.consumer.assign([TopicPartition(self.topic, p) for p in self.partitions])

    async def assign(self, partitions: list[int]) -> None:
        """Read exactly ``partitions`` from now on (their positions are set by ``seek``)."""
        self.partitions = partitions
        self.consumer.assign([TopicPartition(self.topic, p) for p in partitions])

    async def seek(self, positions: dict[int, int]) -> None:
        for partition, offset in positions.items():
            self.consumer.seek(TopicPartition(self.topic, partition), offset)

    async def fetch(self, max_records: int, timeout_ms: int) -> list[CommandRecord]:
        """Up to ``max_records``: waits up to ``timeout_ms`` for the first records, then takes whatever else
        the consumer has already fetched (one getmany returns a single fetched chunk, often far fewer
        records than a batch could hold)."""
        records: list[CommandRecord] = []
        wait_ms = timeout_ms
        while len(records) < max_records:
            try:
                batches = await self.consumer.getmany(timeout_ms=wait_ms, max_records=max_records - len(records))
            except KafkaError as exc:
                raise TransientError(f"commands topic: {exc!r}") from exc
            if not batches:
                break
            records.extend(
                CommandRecord(r.topic, r.partition, r.offset, r.key, r.value)
                for tp in sorted(batches, key=lambda t: t.partition)
                for r in batches[tp]
            )
            wait_ms = 0
        records.sort(key=lambda r: r.partition)
        return records

    def end_offset(self, partition: int) -> int | None:
        end: int | None = self.consumer.highwater(TopicPartition(self.topic, partition))
        return end

    async def dead_letter(self, record: CommandRecord, reason: str, attempts: int) -> None:
        headers = [
            ("reason", reason.encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("attempts", str(attempts).encode()),
        ]
        try:
            await self.producer.send_and_wait(
                self.dead_letter_topic, value=record.value, key=record.key, headers=headers
            )
        except KafkaError as exc:
            raise TransientError(f"dead-letter topic: {exc!r}") from exc

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()
