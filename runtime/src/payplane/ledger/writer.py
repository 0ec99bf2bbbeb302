"""The ledger writer: owns ledger partitions and applies their commands in batches, exactly once.

For each batch (one fetch, over every partition the writer owns), one PostgreSQL transaction stores the
balances, transfers, entries, refusals, outcome messages (outbox) and the consumed Kafka offsets, after
checking the writer's epoch on each partition. So a crash anywhere loses nothing and applies nothing
twice: on restart the writer reads its positions from the database (not from the broker) and re-reads
whatever was not committed. A transfer between two partitions the writer owns posts both legs in that
one transaction; a leg for a partition another writer owns goes through the outbox.

Records that cannot be decoded go to the dead-letter topic with the reason before their offset is
committed; transient failures (database or broker unavailable) are retried with bounded exponential
backoff and never skip a record; a newer writer's epoch (``FencedError``) stops this one.
"""

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from payplane.faults import crash_point
from payplane.ledger.account_cache import AccountCache
from payplane.ledger.batch import (
    AppliedBatch,
    Command,
    Forward,
    PartitionOf,
    apply_batch,
    ids_to_load,
    pending_ids_of,
    split_forwards,
)
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
# Deciding a batch is CPU work in this thread; every so many commands it yields to the event loop so the
# previous batch's commit (another task) can read its last answer and send its next statement.
YIELD_EVERY_COMMANDS: Final = 250
# Legs applied in the batch that made them can make legs in turn (a credit leg refused → its reversal);
# after this many rounds (more than any transfer needs) the rest go through the outbox.
LOCAL_LEG_ROUNDS_MAX: Final = 4
# After a batch failed to commit, this many batches look their transfer ids up before deciding (the
# failed one and the one decided on top of it among them), so a duplicate never fails a commit twice.
LOOK_UP_BATCHES_AFTER_FAILURE: Final = 4


class TransientError(Exception):
    """A dependency is unavailable for now (connection lost, broker down): retry, never skip."""


class DuplicateIdError(TransientError):
    """A batch decided on the assumption that its transfer ids were new met an id the database already
    holds (an applied transfer or a remembered refusal): its transaction rolled back, and the batch is
    decided again with its ids looked up, so the duplicate gets its recorded answer."""


class CommandRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class CommandLog(Protocol):
    """The commands topic, read from explicit positions (the database's, never the broker's)."""

    async def assign(self, partitions: list[int]) -> None: ...
    async def seek(self, positions: dict[int, int]) -> None: ...
    async def fetch(self, max_records: int, timeout_ms: int) -> list[CommandRecord]: ...
    async def dead_letter(self, record: CommandRecord, reason: str, attempts: int) -> None: ...
    def end_offset(self, partition: int) -> int | None:
        """The partition's log-end offset as last seen by a fetch (None before the first); no I/O."""
        ...


@dataclass
class PartitionBatch:
    """What the store persists for one partition of one batch (a batch writes one or more of these in
    one transaction)."""

    partition: int
    epoch: int
    now_us: int
    new_accounts: list[Account]
    changes: list[BalanceChange]
    outcomes: list[TransferOutcome]
    forwards: list[Forward]
    next_offset: tuple[str, int, int] | None  # topic, kafka partition, offset to read next (None: no records)
    # Decided without looking its own transfer ids up: the store must refuse to commit it if any of them
    # is already applied or refused (``DuplicateIdError``), since the decision assumed them new.
    ids_assumed_new: bool = False


class WriterObserver(Protocol):
    """Where the writer reports what it did (metrics); the default observer ignores it."""

    def batch_applied(
        self, partition: int, records: int, results: Counter[str], seconds: float, next_offset: int
    ) -> None: ...
    def dead_lettered(self, partition: int) -> None: ...
    def consumer_lag(self, partition: int, records: int) -> None: ...
    def batch_redecided(self, partition: int) -> None: ...


class _IgnoreObserver:
    def batch_applied(
        self, partition: int, records: int, results: Counter[str], seconds: float, next_offset: int
    ) -> None:
        pass

    def consumer_lag(self, partition: int, records: int) -> None:
        pass

    def dead_lettered(self, partition: int) -> None:
        pass

    def batch_redecided(self, partition: int) -> None:
        pass


class LedgerStore(Protocol):
    async def claim(self, partitions: list[int], writer_id: str) -> dict[int, int]: ...
    async def positions(self, topic: str, partitions: list[int]) -> dict[int, int]: ...
    async def load(self, account_ids: set[str], transfer_ids: set[str], refusal_ids: set[str] | None = None) -> Ledger:
        """The accounts, the transfers among ``transfer_ids`` and the refusals among ``refusal_ids`` (the
        same ids when None) that the database holds."""
        ...

    async def due_holds(self, partition: int, now_us: int, limit: int) -> list[str]: ...
    def prepare(self, parts: Sequence[PartitionBatch], ledger: Ledger) -> object:
        """Copy the batch's rows out of ``ledger`` now: the writer mutates it again before they commit."""
        ...

    async def write(self, prepared: object) -> None:
        """Commit what ``prepare`` returned, in one transaction, or raise (``FencedError``, transient)."""
        ...


def _next_offsets(records: list[CommandRecord]) -> dict[int, int]:
    """Per partition, the offset to read next once ``records`` (in offset order per partition) commit."""
    return {r.partition: r.offset + 1 for r in records}


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class _InFlight:
    """The batch whose transaction is committing while the writer decides the next one."""

    commit: asyncio.Task[None]
    records: list[CommandRecord]
    ledger: Ledger


class _PreviousBatchFailedError(Exception):
    def __init__(self, failed: _InFlight, cause: TransientError) -> None:
        super().__init__(str(cause))
        self.failed = failed


class LedgerWriter:
    """Applies batches in a two-stage pipeline: while batch N's transaction commits, batch N+1 is fetched,
    decoded and decided in memory on top of N's (not yet committed) effects; N+1 is written only once N
    has committed. If N fails, N+1's decisions are dropped and both are applied again from the database.

    At most one batch is in flight, so the only uncommitted state the next batch can see is the previous
    batch's: its accounts (the cache holds the very objects it mutated) and its transfers and refusals
    (overlaid on what the next batch loads). Rows are copied out of the ledger before their commit starts
    (``LedgerStore.prepare``), so deciding the next batch never changes what the previous one writes."""

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
        self.committed_offsets: dict[int, int] = {}  # next offset to consume per partition, as committed
        self.applied_records = 0  # committed
        self.batch_records_max = batch_records_max
        self.partition_of = partition_of
        self._next_sweep_at = 0.0
        self.expiry_sweep_interval_s = expiry_sweep_interval_s
        self._fetch_backoff_s = RETRY_BACKOFF_S_MIN
        self.observer: WriterObserver = observer or _IgnoreObserver()
        self.cache = AccountCache(lambda account_id: partition_of(account_id) in self.partitions)
        self._in_flight: _InFlight | None = None
        self._look_up_batches = 0  # batches that still look their ids up after a failed commit

    async def start(self) -> None:
        """Claim the partitions (fencing any previous owner) and resume from the database's positions."""
        self.epochs = await self.store.claim(self.partitions, self.writer_id) if self.partitions else {}
        positions = await self.store.positions(self.topic, self.partitions)
        self.committed_offsets = dict(positions)
        await self.commands.seek(positions)

    async def reassign(self, partitions: list[int]) -> None:
        """Own exactly ``partitions`` from now on: commit the batch in flight, claim them all (fencing any
        other claimant: one this writer's old epoch may not know of, when two writers started at the same
        moment and each took everything), let go of the others, and resume every owned partition from
        the positions in the database. Raises ``FencedError`` if the batch in flight was fenced (call
        again without that partition)."""
        await self.drain()
        wanted = sorted(partitions)
        self.cache.clear()  # accounts of a partition let go and claimed back later would be stale
        self.partitions = wanted
        self.epochs = await self.store.claim(wanted, self.writer_id) if wanted else {}
        await self.commands.assign(wanted)
        positions = await self.store.positions(self.topic, wanted)
        self.committed_offsets = dict(positions)
        await self.commands.seek(positions)
        log.info("writer %s owns partitions %s (epochs %s)", self.writer_id, wanted, self.epochs)

    async def run_once(self) -> int:
        """Fetch one batch and decide it (committing the previous one meanwhile); returns the number of
        records consumed. A batch that is not full (the writer has caught up) is committed before
        returning; a full one stays in flight while the next is fetched and decided."""
        if not self.partitions:  # more writers than partitions: this one stands by
            await asyncio.sleep(FETCH_TIMEOUT_MS / 1000)
            return 0
        try:
            records = await self.commands.fetch(self.batch_records_max, FETCH_TIMEOUT_MS)
        except TransientError as exc:
            log.warning("commands topic unavailable, retrying in %.2fs: %s", self._fetch_backoff_s, exc)
            await self.drain()
            await asyncio.sleep(self._fetch_backoff_s)
            self._fetch_backoff_s = min(self._fetch_backoff_s * 2, RETRY_BACKOFF_S_MAX)
            return 0
        self._fetch_backoff_s = RETRY_BACKOFF_S_MIN
        if records:
            await self._with_retries(records)
        if len(records) < self.batch_records_max:
            await self.drain()  # caught up: no next batch to overlap with, so commit now
        if time.monotonic() >= self._next_sweep_at:
            self._next_sweep_at = time.monotonic() + self.expiry_sweep_interval_s
            await self.drain()
            for partition in self.partitions:
                await self.expire_due_holds(partition, _now_us())
        return len(records)

    async def drain(self) -> None:
        """Commit the batch in flight, if any (applying it again after a transient failure)."""
        while True:
            try:
                await self._settle()
                return
            except _PreviousBatchFailedError as failure:
                await self._with_retries(failure.failed.records)

    async def expire_due_holds(self, partition: int, now_us: int) -> int:
        """Release holds whose timeout has passed (one transaction per sweep); returns how many."""
        await self.drain()
        due = await self.store.due_holds(partition, now_us, EXPIRED_HOLDS_PER_SWEEP_MAX)
        if not due:
            return 0
        ledger = await self._load(set(), set(due), set(due))
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
            await self.store.write(self.store.prepare([batch], ledger))
        except BaseException:
            self.cache.clear()  # the in-memory accounts may be ahead of the database now
            raise
        self.cache.remember(ledger)
        return len(changes)

    async def _load(self, account_ids: set[str], query_ids: set[str], transfer_ids: set[str]) -> Ledger:
        """The ledger a batch is decided on: the accounts it needs (cached or loaded), the transfers among
        ``query_ids`` and the refusals among ``transfer_ids`` from the database, and the transfers and
        refusals among ``transfer_ids`` of the batch in flight (not committed, so not visible yet)."""
        ledger = await self.store.load(self.cache.missing(account_ids), query_ids, transfer_ids)
        in_flight = self._in_flight
        if in_flight is not None:
            recent = in_flight.ledger
            for transfer_id in transfer_ids:
                transfer = recent.transfers.get(transfer_id)
                if transfer is not None:
                    ledger.transfers[transfer_id] = transfer
                    account_ids.update((transfer.debit_account_id, transfer.credit_account_id))
                rejection = recent.rejections.get(transfer_id)
                if rejection is not None:
                    ledger.rejections[transfer_id] = rejection
        self.cache.fill(ledger, account_ids)
        return ledger

    async def _with_retries(self, records: list[CommandRecord]) -> None:
        backoff_s = RETRY_BACKOFF_S_MIN
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._apply(records, attempts)
                return
            except _PreviousBatchFailedError as failure:
                # the previous batch did not commit: this one was decided on top of it, so both go again
                log.warning("previous batch failed (%s); applying both again", failure)
                await self._with_retries(failure.failed.records)
            except TransientError as exc:
                log.warning(
                    "partitions %s: transient failure (attempt %s), retrying in %.2fs: %s",
                    sorted({r.partition for r in records}),
                    attempts,
                    backoff_s,
                    exc,
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)

    async def _apply(self, records: list[CommandRecord], attempts: int) -> None:
        """Decide one fetch's records (every partition in them) and start its commit once the previous
        batch has committed."""
        record_of: dict[int, CommandRecord] = {}
        commands: dict[int, list[Command]] = defaultdict(list)
        for index, record in enumerate(records):
            if index % YIELD_EVERY_COMMANDS == YIELD_EVERY_COMMANDS - 1:
                await asyncio.sleep(0)  # let the batch in flight send its next statement
            command = await self._decode_or_dead_letter(record, attempts)
            if command is not None:
                commands[record.partition].append(command)
                record_of[id(command)] = record
        account_ids, transfer_ids = self._ids_to_load(commands)
        # Normally a batch's own ids are new: rather than look each up among the transfers (the largest
        # table), it is decided as if they were and the commit checks it (``DuplicateIdError``); refusals,
        # far fewer, are looked up. Retries and the batches after a failure look everything up.
        assume_new = attempts == 1 and self._look_up_batches == 0
        self._look_up_batches = max(0, self._look_up_batches - 1)
        query_ids = set().union(*map(pending_ids_of, commands.values())) if assume_new else transfer_ids
        try:
            ledger = await self._load(account_ids, query_ids, transfer_ids)
            now_us = _now_us()
            applied = await self._decide(commands, ledger, now_us)
            await self._dead_letter_misrouted(applied.values(), record_of, attempts)
            prepared = self.store.prepare(self._parts(applied, records, now_us, assume_new), ledger)
            await self._settle()  # the previous batch commits before this one may be written
        except BaseException:
            self.cache.clear()  # the in-memory accounts may be ahead of the database now
            raise
        self.cache.remember(ledger)
        results = {partition: Counter(o.result for o in batch.outcomes) for partition, batch in applied.items()}
        commit = asyncio.create_task(self._commit(prepared, records, results, now_us))
        self._in_flight = _InFlight(commit, records, ledger)

    def _ids_to_load(self, commands: dict[int, list[Command]]) -> tuple[set[str], set[str]]:
        """(account ids, transfer ids) the batch may consult, with the transit accounts of every owned
        partition (for the legs it applies itself)."""
        account_ids: set[str] = set()
        transfer_ids: set[str] = set()
        for partition, partition_commands in commands.items():
            accounts, transfers = ids_to_load(partition_commands, partition, transit_partitions=self.partitions)
            account_ids |= accounts
            transfer_ids |= transfers
        return account_ids, transfer_ids

    def _parts(
        self, applied: dict[int, AppliedBatch], records: list[CommandRecord], now_us: int, assume_new: bool
    ) -> list[PartitionBatch]:
        """One part per partition the batch read from or applied legs on; a partition read from commits
        its next offset even if nothing of it applied (records dead-lettered)."""
        next_offsets = _next_offsets(records)
        return [
            PartitionBatch(
                partition=partition,
                epoch=self.epochs[partition],
                now_us=now_us,
                new_accounts=batch.new_accounts,
                changes=batch.changes,
                outcomes=batch.outcomes,
                forwards=batch.forwards,
                next_offset=(self.topic, partition, next_offsets[partition]) if partition in next_offsets else None,
                ids_assumed_new=assume_new,
            )
            for partition, batch in sorted((p, applied.get(p, AppliedBatch())) for p in {*applied, *next_offsets})
        ]

    async def _decide(self, commands: dict[int, list[Command]], ledger: Ledger, now_us: int) -> dict[int, AppliedBatch]:
        """Apply each partition's commands in order; then, in rounds, the legs they made for partitions
        this writer owns (whose accounts the batch loaded). Returns what each partition did."""
        applied: dict[int, AppliedBatch] = defaultdict(AppliedBatch)
        round_commands: dict[int, list[Command]] = commands
        for round_number in range(LOCAL_LEG_ROUNDS_MAX + 1):
            legs_made: dict[int, list[Command]] = defaultdict(list)
            for partition, partition_commands in sorted(round_commands.items()):
                for start in range(0, len(partition_commands), YIELD_EVERY_COMMANDS):
                    chunk = partition_commands[start : start + YIELD_EVERY_COMMANDS]
                    done = apply_batch(
                        ledger, chunk, partition=partition, partition_of=self.partition_of, now_us=now_us
                    )
                    if round_number < LOCAL_LEG_ROUNDS_MAX:
                        done.forwards, local = split_forwards(done.forwards, ledger, self.partitions)
                        for forward in local:
                            legs_made[forward.partition].append(forward.request)
                    applied[partition].extend(done)
                    await asyncio.sleep(0)  # let the batch in flight send its next statement
            if not legs_made:
                break
            round_commands = legs_made
        return applied

    async def _dead_letter_misrouted(
        self, batches: Iterable[AppliedBatch], record_of: dict[int, CommandRecord], attempts: int
    ) -> None:
        for misrouted in (m for batch in batches for m in batch.misrouted):
            record = record_of.get(id(misrouted.command))
            if record is None:  # a leg made in this batch: split_forwards only keeps legs it can apply
                log.error("a leg made in this batch was misrouted (%s): %s", misrouted.reason, misrouted.command)
                continue
            await self.commands.dead_letter(record, f"misrouted: {misrouted.reason}", attempts)

    async def _commit(
        self, prepared: object, records: list[CommandRecord], results: dict[int, Counter[str]], now_us: int
    ) -> None:
        await self.store.write(prepared)
        crash_point("ledger.after_commit")
        self.applied_records += len(records)
        seconds = max(0.0, (_now_us() - now_us) / 1e6)
        consumed = Counter(r.partition for r in records)
        next_offsets = _next_offsets(records)
        for partition, next_offset in next_offsets.items():
            self.committed_offsets[partition] = next_offset
            self.observer.batch_applied(
                partition, consumed[partition], results.get(partition, Counter()), seconds, next_offset
            )
            end_offset = self.commands.end_offset(partition)
            if end_offset is not None:
                self.observer.consumer_lag(partition, max(0, end_offset - next_offset))

    def lag(self) -> dict[int, int]:
        """Per partition: commands in the log not yet committed (the end the consumer last saw minus the
        committed offset). Partitions whose end is not known yet are left out."""
        lags = {}
        for partition, committed in self.committed_offsets.items():
            end_offset = self.commands.end_offset(partition)
            if end_offset is not None:
                lags[partition] = max(0, end_offset - committed)
        return lags

    async def _settle(self) -> None:
        """Wait for the batch in flight to commit. A transient failure becomes ``_PreviousBatchFailedError``
        (with the batch's records, to apply again); ``FencedError`` and the rest pass through."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            await in_flight.commit
        except TransientError as exc:
            self.cache.clear()
            if isinstance(exc, DuplicateIdError):
                log.info("%s; deciding the batch again with its ids looked up", exc)
                for partition in sorted({r.partition for r in in_flight.records}):
                    self.observer.batch_redecided(partition)
            self._look_up_batches = LOOK_UP_BATCHES_AFTER_FAILURE
            raise _PreviousBatchFailedError(in_flight, exc) from exc
        except BaseException:
            self.cache.clear()
            raise

    async def _decode_or_dead_letter(self, record: CommandRecord, attempts: int) -> Command | None:
        try:
            return decode_command_bytes(record.value)
        except (MessageError, RequestDecodeError) as exc:
            await self.commands.dead_letter(record, str(exc), attempts)
            self.observer.dead_lettered(record.partition)
            return None
