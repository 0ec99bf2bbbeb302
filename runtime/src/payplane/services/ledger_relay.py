"""``payplane ledger-relay``: publishes one ledger shard's outbox (outcomes for the payment workers, legs
for other partitions) to Kafka in a process of its own, so the writer's single Python thread spends
its time deciding and committing batches. The operator runs it as a second container of every writer
pod (the writers then run with ``PAYPLANE_LEDGER_RELAY=separate``); several relays on one shard are
safe (rows are taken with ``for update skip locked``; consumers deduplicate by event id).

Environment: PAYPLANE_LEDGER_DSN, KAFKA_BOOTSTRAP, PAYPLANE_RAIL, PAYPLANE_LEDGER_SHARD (names the
outbox in event ids; default: the database's name), PAYPLANE_METRICS_PORT (serve /metrics; 0 or
unset: off) on PAYPLANE_BIND_ADDRESS (default 127.0.0.1).
SIGTERM stops it after the round in flight; SIGKILL loses nothing (unpublished rows stay unpublished).
"""

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass

from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.platform.metrics import LedgerRelayMetrics
from payplane.services.entry import ConfigError, serve_from_env

log = logging.getLogger("payplane.ledger_relay")


@dataclass(frozen=True)
class RelayConfig:
    dsn: str
    bootstrap: str
    rail: str
    shard: str
    metrics_port: int  # 0: no /metrics endpoint
    bind_address: str = "127.0.0.1"


def outbox_source(rail: str, shard: str) -> str:
    """How a shard's outbox is named in the event ids of what it publishes (``<source>:<row>.<index>``):
    unique per shard, so two shards' rows never share an event id."""
    return f"{rail}/{shard}"


def shard_name(env: dict[str, str]) -> str:
    """PAYPLANE_LEDGER_SHARD, or the shard database's name."""
    return env.get("PAYPLANE_LEDGER_SHARD") or env["PAYPLANE_LEDGER_DSN"].rsplit("/", 1)[-1].split("?", 1)[0]


def config_from_env(env: dict[str, str]) -> RelayConfig:
    missing = [k for k in ("PAYPLANE_LEDGER_DSN", "KAFKA_BOOTSTRAP", "PAYPLANE_RAIL") if not env.get(k)]
    if missing:
        raise ConfigError(f"missing configuration: {', '.join(missing)}")
    return RelayConfig(
        dsn=env["PAYPLANE_LEDGER_DSN"],
        bootstrap=env["KAFKA_BOOTSTRAP"],
        rail=env["PAYPLANE_RAIL"],
        shard=shard_name(env),
        metrics_port=int(env.get("PAYPLANE_METRICS_PORT", "0")),
        bind_address=env.get("PAYPLANE_BIND_ADDRESS") or "127.0.0.1",
    )


async def run(config: RelayConfig) -> int:
    metrics = LedgerRelayMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address)
    relay = OutboxRelay(
        config.dsn,
        config.bootstrap,
        kind=OutboxKind.LEDGER,
        source=outbox_source(config.rail, config.shard),
        observer=metrics.outbox,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    log.info("relaying the outbox of shard %s of rail %s", config.shard, config.rail)
    await relay.run()
    return 0


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "ledger-relay", help="publish a ledger shard's outbox to Kafka (configured from the environment)"
    )
    parser.set_defaults(handler=lambda _args: serve_from_env(config_from_env, run, log))
