"""``payplane payment-settler``: what settles a rail's payments, in a process of its own beside the
payment worker — the payments outbox relay (ledger commands and payment events to Kafka) and the
consumer of ledger outcomes (each outcome advances its payment's state machine once). The operator runs
it as a second container of every payment-worker pod, and the workers there run with
``PAYPLANE_SETTLEMENT=separate``: the worker's one Python thread then answers payment calls without
waiting behind settlement batches, and the two processes use both cores. Several settlers of one rail
are safe: outbox rows are taken with ``for update skip locked``, and the outcome consumers share one
consumer group and apply each outcome once.

Environment: PAYPLANE_PAYMENTS_DSN (migrated on start, as the worker does), KAFKA_BOOTSTRAP,
PAYPLANE_RAIL, PAYPLANE_LEDGER_PARTITION_COUNT, PAYPLANE_METRICS_PORT (serve /metrics; 0 or unset: off)
on PAYPLANE_BIND_ADDRESS (default 127.0.0.1). It needs no SPIFFE identity: it talks only to PostgreSQL
and Kafka. SIGTERM stops it after the batches in flight; SIGKILL loses nothing (unpublished rows stay in
the outbox, unapplied outcomes stay uncommitted in the consumer group).
"""

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Final

from payplane.adapters.ledger_results import LedgerResultsConsumer
from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.adapters.payments_store import MIGRATIONS_PACKAGE, PaymentsStore
from payplane.adapters.postgres_migrations import migrate_database
from payplane.platform.metrics import SettlementMetrics
from payplane.services.entry import ConfigError, serve_from_env, stop_when_a_task_dies
from payplane_contracts.topics import RailTopics

log = logging.getLogger("payplane.payment_settler")

SETTLEMENT_IN_PROCESS: Final = "in-process"  # the payment worker settles too (a single process)
SETTLEMENT_SEPARATE: Final = "separate"  # `payplane payment-settler` does, beside the worker (the operator's pods)
SETTLER_POOL_SIZE: Final = 4  # the outcome consumer's connections (the relay keeps its own)


@dataclass(frozen=True)
class SettlerConfig:
    dsn: str
    bootstrap: str
    rail: str
    partition_count: int
    metrics_port: int = 0  # 0: no /metrics endpoint
    bind_address: str = "127.0.0.1"


def config_from_env(env: dict[str, str]) -> SettlerConfig:
    missing = [k for k in ("PAYPLANE_PAYMENTS_DSN", "KAFKA_BOOTSTRAP", "PAYPLANE_RAIL") if not env.get(k)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")
    try:
        return SettlerConfig(
            dsn=env["PAYPLANE_PAYMENTS_DSN"],
            bootstrap=env["KAFKA_BOOTSTRAP"],
            rail=env["PAYPLANE_RAIL"],
            partition_count=int(env.get("PAYPLANE_LEDGER_PARTITION_COUNT", "1")),
            metrics_port=int(env.get("PAYPLANE_METRICS_PORT", "0")),
            bind_address=env.get("PAYPLANE_BIND_ADDRESS") or "127.0.0.1",
        )
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def settles_in_process(env: dict[str, str]) -> bool:
    """PAYPLANE_SETTLEMENT as the payment worker reads it: does the worker settle payments itself?"""
    mode = env.get("PAYPLANE_SETTLEMENT", SETTLEMENT_IN_PROCESS)
    if mode not in (SETTLEMENT_IN_PROCESS, SETTLEMENT_SEPARATE):
        raise ConfigError(
            f"PAYPLANE_SETTLEMENT must be {SETTLEMENT_IN_PROCESS!r} or {SETTLEMENT_SEPARATE!r}, got {mode!r}"
        )
    return mode == SETTLEMENT_IN_PROCESS


class Settlement:
    """The payments outbox relay and the ledger outcome consumer of one rail, as tasks of the process that
    runs them (the settler, or a worker settling in-process)."""

    def __init__(
        self, *, dsn: str, bootstrap: str, topics: RailTopics, store: PaymentsStore, metrics: SettlementMetrics
    ) -> None:
        self.relay = OutboxRelay(
            dsn, bootstrap, kind=OutboxKind.PAYMENTS, source=f"{topics.rail}-payments", observer=metrics.outbox
        )
        self.results = LedgerResultsConsumer(bootstrap, topics, store, observer=metrics)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.relay.run()), asyncio.create_task(self.results.run())]

    def stop(self) -> None:
        self.relay.stop()
        self.results.stop()


async def run(config: SettlerConfig) -> int:
    topics = RailTopics(config.rail)
    await migrate_database(config.dsn, MIGRATIONS_PACKAGE)
    store = await PaymentsStore.open(config.dsn, topics, config.partition_count, pool_size=SETTLER_POOL_SIZE)
    metrics = SettlementMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address)
    settlement = Settlement(dsn=config.dsn, bootstrap=config.bootstrap, topics=topics, store=store, metrics=metrics)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tasks = settlement.start()
    failed = stop_when_a_task_dies(tasks, stopping, log)
    log.info("settling the payments of rail %s", config.rail)
    try:
        await stopping.wait()
        return 1 if failed else 0
    finally:
        settlement.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "payment-settler",
        help="relay a rail's payments outbox and apply its ledger outcomes (configured from the environment)",
    )
    parser.set_defaults(handler=lambda _args: serve_from_env(config_from_env, run, log))
