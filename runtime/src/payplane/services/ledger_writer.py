"""``payplane ledger-writer``: one ledger writer process (claims partitions, migrates its shard database,
applies commands, relays outcomes) configured from the environment, as the operator's Deployment runs it.

Environment: PAYPLANE_LEDGER_DSN, KAFKA_BOOTSTRAP, PAYPLANE_RAIL, PAYPLANE_LEDGER_PARTITIONS (e.g.
``0-3`` or ``0,2``), PAYPLANE_LEDGER_PARTITION_COUNT, PAYPLANE_WRITER_ID (default host-pid),
PAYPLANE_LEDGER_BATCH_RECORDS_MAX (records per batch, default 2000), PAYPLANE_METRICS_PORT (serve
/metrics at this port; 0 or unset: off) on PAYPLANE_BIND_ADDRESS (default 127.0.0.1; a Deployment sets
the pod's IP).
SIGTERM stops it after the batch in flight; SIGKILL loses nothing (offsets live in the database).
"""

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass

import asyncpg

from payplane.adapters.ledger_store import MIGRATIONS_PACKAGE, FencedError
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.adapters.outbox_relay import OutboxRelay
from payplane.adapters.postgres_migrations import migrate
from payplane.ledger.writer import BATCH_RECORDS_MAX, LedgerWriter
from payplane.platform.metrics import LedgerWriterMetrics
from payplane.services.entry import ConfigError, serve_from_env
from payplane_contracts.topics import RailTopics

log = logging.getLogger("payplane.ledger_writer")
CONSUMER_ROLE = "ledger-writer"
# The writer allocates a few short-lived containers per transfer. At CPython's default first-generation
# threshold (700 allocations) the cyclic collector runs every few transfers and keeps rescanning the
# long-lived account cache: about a tenth of the writer's CPU (`make bench-ledger`). Nothing the writer
# allocates per transfer forms cycles, so collecting far less often costs no memory to speak of.
GC_GEN0_THRESHOLD = 50_000


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
    )


def tune_garbage_collector() -> None:
    """Collect cycles rarely, and never rescan what start-up allocated (modules, configuration)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)


async def run(config: WriterConfig) -> int:
    tune_garbage_collector()
    topics = RailTopics(config.rail)
    conn = await asyncpg.connect(config.dsn, timeout=10)
    try:
        await migrate(conn, MIGRATIONS_PACKAGE)
    finally:
        await conn.close()
    metrics = LedgerWriterMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address)
    commands = KafkaCommandLog(config.bootstrap, topics, CONSUMER_ROLE, config.partitions)
    store = PostgresLedgerStore(config.dsn, topics)
    writer = LedgerWriter(
        topic=topics.ledger_commands,
        partitions=config.partitions,
        writer_id=config.writer_id,
        store=store,
        log_=commands,
        partition_of=partition_lookup(config.partition_count),
        batch_records_max=config.batch_records_max,
        observer=metrics,
    )
    relay = OutboxRelay(config.dsn, config.bootstrap, source=f"{config.rail}-shard", observer=metrics.outbox)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await commands.start()
    relay_task = asyncio.create_task(relay.run())
    try:
        await writer.start()
        log.info("writer %s owns partitions %s (epochs %s)", config.writer_id, config.partitions, writer.epochs)
        while not stopping.is_set():
            await writer.run_once()
        await writer.drain()  # the batch in flight commits before the writer stops
        return 0
    except FencedError as exc:
        log.error("%s", exc)
        return 3
    finally:
        relay.stop()
        await relay_task
        await commands.stop()
        await store.close()


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("ledger-writer", help="run one ledger writer (configured from the environment)")
    parser.set_defaults(handler=main)


def main(_args: argparse.Namespace) -> int:
    return serve_from_env(config_from_env, run, log)
