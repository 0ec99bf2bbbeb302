"""The payment worker's consumer of ledger outcomes (``payplane.<rail>.ledger.results``).

A consumer group spreads the topic's partitions over the worker replicas. Each fetched batch is
applied in one PostgreSQL transaction; offsets are committed afterwards, at most once per
``COMMIT_INTERVAL_S`` (each commit is a write to the broker's offsets log): a crash or a rebalance
redelivers what was applied since the last commit, which changes nothing (each ledger operation is
resolved once). Undecodable records go to
the group's dead-letter topic with the reason; transient failures are retried with bounded backoff.
"""

import asyncio
import contextlib
import logging
import time
from typing import Final, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from asyncpg.exceptions import InternalClientError

from payplane.adapters.payments_store import PaymentsStore, StatusChange
from payplane_contracts.ledger_messages import MessageError, TransferOutcome, decode_outcome
from payplane_contracts.topics import RailTopics, consumer_group

log = logging.getLogger(__name__)

CONSUMER_ROLE: Final = "payment-worker"
BATCH_RECORDS_MAX: Final = 2000
RETRY_BACKOFF_S_MAX: Final = 5.0
# How long the broker may hold an empty fetch. It answers as soon as any outcome arrives (fetch.min.bytes
# is 1), so this sets only how often an idle consumer polls, not how late an outcome is seen.
FETCH_MAX_WAIT_MS: Final = 500
COMMIT_INTERVAL_S: Final = 1.0
# Once outcomes arrive, wait this long for more before applying them: one transaction then settles the
# outcomes of several writer batches. Applying each writer batch's outcomes as it came cost the worker and
# its database CPU that the accept path needed at moderate rates (docs/benchmarks.md: 5 → 20 ms here, with
# the writers' fetch wait and the relays' round interval, took the machine's CPU per payment at 1,000/s
# from 1.88 to 1.65-1.68 ms and the accept p50 from 33-36 to 14-16 ms; accept→settled p99 stays ≤ 250 ms).
LINGER_S: Final = 0.020


class PaymentObserver(Protocol):
    def payments_changed(self, changes: list[StatusChange]) -> None: ...


class _IgnorePayments:
    def payments_changed(self, changes: list[StatusChange]) -> None:
        pass


def _log_change(change: StatusChange) -> None:
    extra = {"payment_id": change.payment_id} | ({"trace_id": change.trace_id} if change.trace_id else {})
    log.info("payment %s: %s -> %s", change.payment_id, change.old_status, change.new_status, extra=extra)


class LedgerResultsConsumer:
    def __init__(
        self, bootstrap: str, topics: RailTopics, store: PaymentsStore, observer: PaymentObserver | None = None
    ) -> None:
        self.topics = topics
        self.store = store
        self.group = consumer_group(topics.rail, CONSUMER_ROLE)
        self.dead_letter_topic = topics.dead_letters(CONSUMER_ROLE)
        self.bootstrap = bootstrap
        self.consumer, self.producer = self._clients()
        self.applied = 0
        self.observer: PaymentObserver = observer or _IgnorePayments()
        self.dead_lettered = 0
        self._stopping = asyncio.Event()
        self._committed_at = 0.0
        self._uncommitted = False  # applied batches whose offsets are not committed yet
        self._unapplied = False  # the consumer's position is past records not applied (never commit it)

    def stop(self) -> None:
        self._stopping.set()

    def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        consumer = AIOKafkaConsumer(
            self.topics.ledger_results,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        return consumer, AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")

    async def _start(self) -> bool:
        """Connect, retrying with backoff while Kafka is unreachable (a worker may start during an
        outage and must settle payments once Kafka is back); False if stopped first."""
        backoff_s = 0.1
        while not self._stopping.is_set():
            try:
                await self.consumer.start()
                await self.producer.start()
                return True
            except KafkaError as exc:
                log.warning("ledger results: cannot start (%r); retrying in %.1fs", exc, backoff_s)
                for client in (self.consumer, self.producer):
                    with contextlib.suppress(Exception):
                        await client.stop()
                self.consumer, self.producer = self._clients()  # a failed start leaves a client unusable
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)
        return False

    async def run(self) -> None:
        if not await self._start():
            return
        try:
            while not self._stopping.is_set():
                await self._round()
        finally:
            if self._uncommitted and not self._unapplied:
                with contextlib.suppress(KafkaError, OSError):
                    await self.consumer.commit()
            await self.consumer.stop()
            await self.producer.stop()

    async def _round(self) -> None:
        try:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=BATCH_RECORDS_MAX)
        except KafkaError as exc:
            log.warning("ledger results: %r", exc)
            await asyncio.sleep(0.5)
            return
        records = [r for rs in batches.values() for r in rs]
        if not records:
            return
        if len(records) < BATCH_RECORDS_MAX and LINGER_S > 0:
            await asyncio.sleep(LINGER_S)
            with contextlib.suppress(KafkaError):  # what was fetched stays fetched; the rest comes next round
                more = await self.consumer.getmany(timeout_ms=0, max_records=BATCH_RECORDS_MAX - len(records))
                records += [r for rs in more.values() for r in rs]
        outcomes: list[TransferOutcome] = []
        for record in records:
            try:
                outcomes.append(decode_outcome(record.value))
            except MessageError as exc:
                await self._dead_letter(record.value, record.partition, record.offset, str(exc))
        backoff_s = 0.05
        self._unapplied = True
        while True:
            try:
                changes = await self.store.apply_outcomes(outcomes)
                self._unapplied, self._uncommitted = False, True
                self.applied += len(changes)
                self.observer.payments_changed(changes)
                for change in changes:
                    _log_change(change)
                await self._commit_if_due()
                return
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                InternalClientError,
                KafkaError,
            ) as exc:
                if self._stopping.is_set():
                    return  # uncommitted: redelivered to whoever takes the partitions, harmlessly
                log.warning("ledger results: applying a batch failed (%r); retrying in %.2fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)

    async def _commit_if_due(self) -> None:
        """Commit the applied position if the last commit is old enough; a failed commit is only retried
        later (what it would have covered is redelivered at worst, harmlessly)."""
        now = time.monotonic()
        if now - self._committed_at < COMMIT_INTERVAL_S:
            return
        try:
            await self.consumer.commit()
        except KafkaError as exc:
            log.warning("ledger results: committing offsets failed (%r); retrying with the next batch", exc)
            return
        self._committed_at, self._uncommitted = now, False

    async def _dead_letter(self, value: bytes | None, partition: int, offset: int, reason: str) -> None:
        headers = [
            ("reason", reason.encode()),
            ("original_topic", self.topics.ledger_results.encode()),
            ("original_partition", str(partition).encode()),
            ("original_offset", str(offset).encode()),
        ]
        await self.producer.send_and_wait(self.dead_letter_topic, value or b"", headers=headers)
        self.dead_lettered += 1
        log.warning(
            "ledger results: record %d of partition %d dead-lettered to %s: %s",
            offset,
            partition,
            self.dead_letter_topic,
            reason,
        )
