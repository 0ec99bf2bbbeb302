"""The ledger writer: owns ledger partitions and applies their commands in batches, exactly once.

For each batch and each partition in it, one PostgreSQL transaction stores the balances, transfers,
entries, refusals, outcome messages (outbox) and the consumed Kafka offsets, after checking the writer's
epoch. So a crash anywhere loses nothing and applies nothing twice: on restart the writer reads its
positions from the database (not from the broker) and re-reads whatever was not committed.

Records that cannot be decoded go to the dead-letter topic with the reason before their offset is
committed; transient failures (database or broker unavailable) are retried with bounded exponential
backoff and never skip a record; a newer writer's epoch (``FencedError``) stops this one.
"""

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Final, Protocol

from payplane.faults import crash_point
from payplane.ledger.account_cache import AccountCache
from payplane.ledger.batch import Command, Forward, PartitionOf, apply_batch, ids_to_load
from payplane.ledger.codec import RequestDecodeError, decode_command_bytes
from payplane.ledger.engine import Ledger
from payplane.ledger.model import Account, BalanceChange
from payplane_contracts.ledger_messages import MessageError, TransferOutcome

log = logging.getLogger(__name__)

BATCH_RECORDS_MAX: Final = 2000
FETCH_TIMEOUT_MS: Final = 100
RETRY_BACKOFF_S_MIN: Final = 0.05
RETRY_BACKOFF_S_MAX: Final = 5.0
EXPIRY_SWEEP_INTERVAL_S: Final = 1.0
EXPIRED_HOLDS_PER_SWEEP_MAX: Final = 1000


class TransientError(Exception):
    """A dependency is unavailable for now (connection lost, broker down): retry, never skip."""


@dataclass(frozen=True)
class CommandRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class CommandLog(Protocol):
    """The commands topic, read from explicit positions (the database's, never the broker's)."""

    async def seek(self, positions: dict[int, int]) -> None: ...
    async def fetch(self, max_records: int, timeout_ms: int) -> list[CommandRecord]: ...
    async def dead_letter(self, record: CommandRecord, reason: str, attempts: int) -> None: ...


@dataclass
class PartitionBatch:
    """What the store persists for one partition of one batch."""

    partition: int
    epoch: int
    now_us: int
    new_accounts: list[Account]
    changes: list[BalanceChange]
    outcomes: list[TransferOutcome]
    forwards: list[Forward]
    next_offset: tuple[str, int, int] | None  # topic, kafka partition, offset to read next (None: no records)


class WriterObserver(Protocol):
    """Where the writer reports what it did (metrics); the default observer ignores it."""

    def batch_applied(
        self, partition: int, records: int, results: Counter[str], seconds: float, next_offset: int
    ) -> None: ...
    def dead_lettered(self, partition: int) -> None: ...


class _IgnoreObserver:
    def batch_applied(
        self, partition: int, records: int, results: Counter[str], seconds: float, next_offset: int
    ) -> None:
        pass

    def dead_lettered(self, partition: int) -> None:
        pass


class LedgerStore(Protocol):
    async def claim(self, partitions: list[int], writer_id: str) -> dict[int, int]: ...
    async def positions(self, topic: str, partitions: list[int]) -> dict[int, int]: ...
    async def load(self, account_ids: set[str], transfer_ids: set[str]) -> Ledger: ...
    async def due_holds(self, partition: int, now_us: int, limit: int) -> list[str]: ...
    async def persist(self, batch: PartitionBatch, ledger: Ledger) -> None: ...


def _now_us() -> int:
    return time.time_ns() // 1000


class LedgerWriter:
    def __init__(
        self,
        *,
        topic: str,
        partitions: list[int],
        writer_id: str,
        store: LedgerStore,
        log_: CommandLog,
        partition_of: PartitionOf,
        batch_records_max: int = BATCH_RECORDS_MAX,
        observer: WriterObserver | None = None,
        expiry_sweep_interval_s: float = EXPIRY_SWEEP_INTERVAL_S,
    ) -> None:
        self.topic = topic
        self.partitions = sorted(partitions)
        self.writer_id = writer_id
        self.store = store
        self.commands = log_
        self.epochs: dict[int, int] = {}
        self.applied_records = 0
        self.batch_records_max = batch_records_max
        self.partition_of = partition_of
        self._next_sweep_at = 0.0
        self.expiry_sweep_interval_s = expiry_sweep_interval_s
        self._fetch_backoff_s = RETRY_BACKOFF_S_MIN
        self.observer: WriterObserver = observer or _IgnoreObserver()
        self.cache = AccountCache(lambda account_id: partition_of(account_id) in self.partitions)

    async def start(self) -> None:
        """Claim the partitions (fencing any previous owner) and resume from the database's positions."""
        self.epochs = await self.store.claim(self.partitions, self.writer_id)
        await self.commands.seek(await self.store.positions(self.topic, self.partitions))

    async def run_once(self) -> int:
        """Fetch one batch and apply it; returns the number of records consumed (0 while Kafka is away)."""
        try:
            records = await self.commands.fetch(self.batch_records_max, FETCH_TIMEOUT_MS)
        except TransientError as exc:
            log.warning("commands topic unavailable, retrying in %.2fs: %s", self._fetch_backoff_s, exc)
            await asyncio.sleep(self._fetch_backoff_s)
            self._fetch_backoff_s = min(self._fetch_backoff_s * 2, RETRY_BACKOFF_S_MAX)
            return 0
        self._fetch_backoff_s = RETRY_BACKOFF_S_MIN
        by_partition: dict[int, list[CommandRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        for partition, partition_records in sorted(by_partition.items()):
            await self._with_retries(partition, partition_records)
        self.applied_records += len(records)
        if time.monotonic() >= self._next_sweep_at:
            self._next_sweep_at = time.monotonic() + self.expiry_sweep_interval_s
            for partition in self.partitions:
                await self.expire_due_holds(partition, _now_us())
        return len(records)

    async def expire_due_holds(self, partition: int, now_us: int) -> int:
        """Release holds whose timeout has passed (one transaction per sweep); returns how many."""
        due = await self.store.due_holds(partition, now_us, EXPIRED_HOLDS_PER_SWEEP_MAX)
        if not due:
            return 0
        ledger = await self._load(set(), set(due))
        try:
            changes = [c for c in (ledger.expire(hold_id, now_us) for hold_id in due) if c is not None]
            outcomes = [
                TransferOutcome(
                    c.pending_resolved.id, "expired", partition, now_us, c.pending_resolved.request.payment_ref
                )
                for c in changes
                if c.pending_resolved is not None
            ]
            batch = PartitionBatch(partition, self.epochs[partition], now_us, [], changes, outcomes, [], None)
            await self.store.persist(batch, ledger)
        except BaseException:
            self.cache.clear()  # the in-memory accounts may be ahead of the database now
            raise
        self.cache.remember(ledger)
        return len(changes)

    async def _load(self, account_ids: set[str], transfer_ids: set[str]) -> Ledger:
        ledger = await self.store.load(self.cache.missing(account_ids), transfer_ids)
        self.cache.fill(ledger, account_ids)
        return ledger

    async def _with_retries(self, partition: int, records: list[CommandRecord]) -> None:
        backoff_s = RETRY_BACKOFF_S_MIN
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._apply_partition(partition, records, attempts)
                return
            except TransientError as exc:
                log.warning(
                    "partition %s: transient failure (attempt %s), retrying in %.2fs: %s",
                    partition,
                    attempts,
                    backoff_s,
                    exc,
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)

    async def _apply_partition(self, partition: int, records: list[CommandRecord], attempts: int) -> None:
        record_of: dict[int, CommandRecord] = {}
        commands: list[Command] = []
        for record in records:
            command = await self._decode_or_dead_letter(record, attempts)
            if command is not None:
                commands.append(command)
                record_of[id(command)] = record
        account_ids, transfer_ids = ids_to_load(commands, partition)
        ledger = await self._load(account_ids, transfer_ids)
        try:
            await self._decide_and_persist(
                partition=partition,
                records=records,
                commands=commands,
                record_of=record_of,
                ledger=ledger,
                attempts=attempts,
            )
        except BaseException:
            self.cache.clear()  # the in-memory accounts may be ahead of the database now
            raise
        self.cache.remember(ledger)
        crash_point("ledger.after_commit")

    async def _decide_and_persist(
        self,
        *,
        partition: int,
        records: list[CommandRecord],
        commands: list[Command],
        record_of: dict[int, CommandRecord],
        ledger: Ledger,
        attempts: int,
    ) -> None:
        started_s = time.monotonic()
        now_us = _now_us()
        applied = apply_batch(ledger, commands, partition=partition, partition_of=self.partition_of, now_us=now_us)
        for misrouted in applied.misrouted:
            await self.commands.dead_letter(
                record_of[id(misrouted.command)], f"misrouted: {misrouted.reason}", attempts
            )
        batch = PartitionBatch(
            partition=partition,
            epoch=self.epochs[partition],
            now_us=now_us,
            new_accounts=applied.new_accounts,
            changes=applied.changes,
            outcomes=applied.outcomes,
            forwards=applied.forwards,
            next_offset=(self.topic, partition, records[-1].offset + 1),
        )
        await self.store.persist(batch, ledger)
        self.observer.batch_applied(
            partition,
            len(records),
            Counter(o.result for o in applied.outcomes),
            time.monotonic() - started_s,
            records[-1].offset + 1,
        )

    async def _decode_or_dead_letter(self, record: CommandRecord, attempts: int) -> Command | None:
        try:
            return decode_command_bytes(record.value)
        except (MessageError, RequestDecodeError) as exc:
            await self.commands.dead_letter(record, str(exc), attempts)
            self.observer.dead_lettered(record.partition)
            return None
