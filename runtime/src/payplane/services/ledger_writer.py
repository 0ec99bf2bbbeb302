"""``payplane ledger-writer``: one ledger writer process (claims partitions, migrates its shard database,
applies commands, relays outcomes) configured from the environment, as the operator's Deployment runs it.

Environment: PAYPLANE_LEDGER_DSN, KAFKA_BOOTSTRAP, PAYPLANE_RAIL, PAYPLANE_LEDGER_PARTITIONS (e.g.
``0-3`` or ``0,2``), PAYPLANE_LEDGER_PARTITION_COUNT, PAYPLANE_WRITER_ID (default host-pid),
PAYPLANE_LEDGER_BATCH_RECORDS_MAX (records per batch, default 2000), PAYPLANE_METRICS_PORT (serve
/metrics and GET /status at this port; 0 or unset: off) on PAYPLANE_BIND_ADDRESS (default 127.0.0.1; a Deployment sets
the pod's IP).
PAYPLANE_LEDGER_RELAY: ``in-process`` (default: this process also publishes the shard's outbox) or
``separate`` (``payplane ledger-relay`` does, beside it: the operator's pods), PAYPLANE_LEDGER_SHARD (names
the outbox in event ids; default: the database's name).
PAYPLANE_LEDGER_PARTITIONS are the shard's partitions; when the shard runs several writers they share
them (``payplane.ledger.assignment``): each heartbeats in the shard database every
PAYPLANE_WRITER_HEARTBEAT_S (default 1) and owns its round-robin share of the partitions among the
writers whose heartbeat is younger than PAYPLANE_WRITER_LEASE_S (default 10).
SIGTERM stops it after the batch in flight and hands its partitions over at once; SIGKILL loses nothing
(offsets live in the database) and its partitions move to the others when its lease expires.
"""

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any, Final

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE, FencedError
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.adapters.postgres_migrations import migrate_database
from payplane.ledger.assignment import owned_partitions
from payplane.ledger.writer import BATCH_RECORDS_MAX, LedgerWriter, TransientError
from payplane.platform.metrics import LedgerWriterMetrics
from payplane.services.entry import ConfigError, serve_from_env
from payplane.services.ledger_relay import outbox_source, shard_name
from payplane_contracts.topics import RailTopics

log = logging.getLogger("payplane.ledger_writer")
CONSUMER_ROLE = "ledger-writer"
# The writer allocates a few short-lived containers per transfer. At CPython's default first-generation
# threshold (700 allocations) the cyclic collector runs every few transfers and keeps rescanning the
# long-lived account cache: about a tenth of the writer's CPU (`make bench-ledger`). Nothing the writer
# allocates per transfer forms cycles, so collecting far less often costs no memory to speak of.
GC_GEN0_THRESHOLD = 50_000
HEARTBEAT_S = 1.0
LEASE_S = 10.0
RELAY_IN_PROCESS = "in-process"
RELAY_SEPARATE = "separate"
# The lag is also reported after every commit; this refresh keeps it true while no batch commits (a
# writer stuck on its database falls behind visibly).
LAG_REFRESH_S: Final = 1.0


@dataclass(frozen=True)
class WriterConfig:
    dsn: str
    bootstrap: str
    rail: str
    partitions: list[int]
    partition_count: int
    writer_id: str
    batch_records_max: int
    metrics_port: int  # 0: no /metrics endpoint
    bind_address: str = "127.0.0.1"
    heartbeat_s: float = HEARTBEAT_S
    lease_s: float = LEASE_S
    relay_in_process: bool = True
    shard: str = ""


def parse_partitions(text: str) -> list[int]:
    """``0-3`` → [0, 1, 2, 3]; ``0,2,5`` → [0, 2, 5]."""
    partitions: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            partitions.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"PAYPLANE_LEDGER_PARTITIONS must look like '0-3' or '0,2', got {text!r}") from None
    return sorted(partitions)


def config_from_env(env: dict[str, str]) -> WriterConfig:
    missing = [
        k
        for k in ("PAYPLANE_LEDGER_DSN", "KAFKA_BOOTSTRAP", "PAYPLANE_RAIL", "PAYPLANE_LEDGER_PARTITIONS")
        if not env.get(k)
    ]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")
    partitions = parse_partitions(env["PAYPLANE_LEDGER_PARTITIONS"])
    count = int(env.get("PAYPLANE_LEDGER_PARTITION_COUNT", str(max(partitions) + 1)))
    if max(partitions) >= count:
        raise ConfigError(f"partition {max(partitions)} is outside the rail's {count} partitions")
    relay_mode = env.get("PAYPLANE_LEDGER_RELAY", RELAY_IN_PROCESS)
    if relay_mode not in (RELAY_IN_PROCESS, RELAY_SEPARATE):
        raise ConfigError(
            f"PAYPLANE_LEDGER_RELAY must be {RELAY_IN_PROCESS!r} or {RELAY_SEPARATE!r}, got {relay_mode!r}"
        )
    return WriterConfig(
        dsn=env["PAYPLANE_LEDGER_DSN"],
        bootstrap=env["KAFKA_BOOTSTRAP"],
        rail=env["PAYPLANE_RAIL"],
        partitions=partitions,
        partition_count=count,
        writer_id=env.get("PAYPLANE_WRITER_ID") or f"{socket.gethostname()}-{os.getpid()}",
        batch_records_max=int(env.get("PAYPLANE_LEDGER_BATCH_RECORDS_MAX", str(BATCH_RECORDS_MAX))),
        metrics_port=int(env.get("PAYPLANE_METRICS_PORT", "0")),
        bind_address=env.get("PAYPLANE_BIND_ADDRESS") or "127.0.0.1",
        heartbeat_s=float(env.get("PAYPLANE_WRITER_HEARTBEAT_S", str(HEARTBEAT_S))),
        lease_s=float(env.get("PAYPLANE_WRITER_LEASE_S", str(LEASE_S))),
        relay_in_process=relay_mode == RELAY_IN_PROCESS,
        shard=shard_name(env),
    )


class Membership:
    """This writer's share of the shard's partitions, renewed by a heartbeat in the shard database."""

    def __init__(self, store: PostgresLedgerStore, config: WriterConfig) -> None:
        self.store = store
        self.config = config
        self.share: list[int] = []
        self.epochs_seen: dict[int, int] = {}  # the database's epochs at the last heartbeat

    async def beat(self) -> list[str]:
        group = ",".join(str(p) for p in self.config.partitions)
        live = await self.store.heartbeat(self.config.writer_id, group, self.config.lease_s)
        self.share = owned_partitions(self.config.writer_id, live, self.config.partitions)
        self.epochs_seen = await self.store.partition_epochs(self.config.partitions)
        return live

    def claimed_by_another(self, own_epochs: dict[int, int]) -> list[int]:
        """Partitions this writer holds whose epoch another writer has since bumped (for instance one
        that claimed a share computed before this writer joined): re-claimed at once, not at the next
        commit, so an idle partition is not left looking owned by the other writer."""
        return [p for p, epoch in own_epochs.items() if self.epochs_seen.get(p, epoch) > epoch]

    async def run(self) -> None:
        """Heartbeat until cancelled; a failed heartbeat keeps the current share and tries again (the
        database being unreachable stops the batches too, and a lease outlives a few missed beats)."""
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self.beat()
            except TransientError as exc:
                log.warning("writer %s: heartbeat failed: %s", self.config.writer_id, exc)


def tune_garbage_collector() -> None:
    """Collect cycles rarely, and never rescan what start-up allocated (modules, configuration)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)


async def run(config: WriterConfig) -> int:
    tune_garbage_collector()
    topics = RailTopics(config.rail)
    await migrate_database(config.dsn, MIGRATIONS_PACKAGE)
    metrics = LedgerWriterMetrics()
    store = PostgresLedgerStore(config.dsn, topics)
    membership = Membership(store, config)
    live = await membership.beat()
    commands = KafkaCommandLog(config.bootstrap, topics, CONSUMER_ROLE, membership.share)
    writer = LedgerWriter(
        topic=topics.ledger_commands,
        partitions=membership.share,
        writer_id=config.writer_id,
        store=store,
        log_=commands,
        partition_of=partition_lookup(config.partition_count),
        batch_records_max=config.batch_records_max,
        observer=metrics,
    )
    relay = OutboxRelay(
        config.dsn,
        config.bootstrap,
        kind=OutboxKind.LEDGER,
        source=outbox_source(config.rail, config.shard),
        observer=metrics.outbox,
    )
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address, status=lambda: writer_status(config, writer, metrics))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await commands.start()
    relay_task = asyncio.create_task(relay.run()) if config.relay_in_process else None
    heartbeat_task = asyncio.create_task(membership.run())
    lag_task: asyncio.Task[None] | None = None
    try:
        await writer.start()
        lag_task = asyncio.create_task(_refresh_lag(writer, metrics, stopping))
        log.info(
            "writer %s owns partitions %s of %s (live writers %s)",
            config.writer_id,
            writer.partitions,
            config.partitions,
            sorted(live),
        )
        while not stopping.is_set():
            await _follow_membership(writer, membership)
        await writer.drain()  # the batch in flight commits before the writer stops
        return 0
    finally:
        heartbeat_task.cancel()
        stopping.set()
        if lag_task is not None:
            await lag_task
        if relay_task is not None:
            relay.stop()
            await relay_task
        await _leave(store, config.writer_id)
        await commands.stop()
        await store.close()


async def _follow_membership(writer: LedgerWriter, membership: Membership) -> None:
    """One round: take the share the membership gives (when it changed), then one batch. A partition
    another writer has claimed (``FencedError``) is let go of, without stopping the others."""
    try:
        if membership.share != writer.partitions or membership.claimed_by_another(writer.epochs):
            await writer.reassign(membership.share)
        await writer.run_once()
    except FencedError as exc:
        # the fenced batch was the one in flight, so nothing is in flight now and this cannot be fenced
        log.warning("%s; letting partition %s go", exc, exc.partition)
        await writer.reassign([p for p in writer.partitions if p != exc.partition])


async def _leave(store: PostgresLedgerStore, writer_id: str) -> None:
    try:
        await store.leave(writer_id)
    except TransientError as exc:
        log.warning("writer %s could not leave the membership (its lease will expire): %s", writer_id, exc)


async def _refresh_lag(writer: LedgerWriter, metrics: LedgerWriterMetrics, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        metrics.owned(writer.partitions)  # partitions handed to another writer are no longer reported here
        for partition, records in writer.lag().items():
            metrics.consumer_lag(partition, records)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), LAG_REFRESH_S)


def writer_status(config: WriterConfig, writer: LedgerWriter, metrics: LedgerWriterMetrics) -> dict[str, Any]:
    """``GET /status`` on the metrics port: the shard's partitions, the share this writer owns now, and
    its lag on each (the values of ``payplane_ledger_consumer_lag_records``; a partition without a value
    yet is left out). Read on the metrics thread: only lists and dicts that are replaced, never changed."""
    owned, lag = writer.partitions, metrics.lag_by_partition
    return {
        "role": "ledger-writer",
        "rail": config.rail,
        "writerId": config.writer_id,
        "partitions": config.partitions,
        "owned": owned,
        "lagRecords": {str(p): lag[p] for p in sorted(lag) if p in owned},
    }


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("ledger-writer", help="run one ledger writer (configured from the environment)")
    parser.set_defaults(handler=main)


def main(_args: argparse.Namespace) -> int:
    return serve_from_env(config_from_env, run, log)
