"""Ledger throughput benchmark (``make bench-ledger``): real Kafka, real PostgreSQL, fsync on.

Modes, each on a fresh shard database and topic:
- ``writer``: transfers/s applied by one ledger writer consuming from Kafka and committing durably
  (records pre-produced; the clock runs from the first fetch until every record is committed);
- ``relay``: outcome messages/s the writer's outbox relay publishes to Kafka (after a writer run; the
  relay runs in the writer's process, so its CPU per message adds to the writer's);
- ``set-based``: the same engine + store without Kafka (commands in memory): the limit of the design;
- ``per-transfer``: the best one-transaction-per-transfer baseline: one PL/pgSQL call per transfer
  (locks in account-id order), 8 concurrent connections.
Patterns: ``uniform`` (random pairs of 10,000 accounts) and ``hot`` (every transfer debits one account).
``--history N`` puts N earlier transfers (random ids, between two accounts of their own) into each shard
before the clock starts, as on a shard that has run for a while: indexes are deep and lookups by id cost
what they cost in production. Each run ends with ``ledger verify``; a run whose invariants fail is
reported as failed.
"""

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import pstats
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from payplane.adapters.ledger_store import BatchOutcome, claim_partitions, load_ledger, persist
from payplane.adapters.ledger_verify import verify
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.adapters.postgres_migrations import migrate
from payplane.adapters.postgres_sessions import KEY_LOOKUP_SESSION
from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.settings import load_settings
from payplane.ledger.batch import apply_batch, ids_to_load
from payplane.ledger.codec import request_to_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter
from payplane.services.ledger_writer import tune_garbage_collector
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics

ACCOUNT_COUNT = 10_000
HOT_ACCOUNT = "acct-hot"
PER_TRANSFER_CONNECTIONS = 8
RESULTS_TOPIC_PARTITIONS = 8

PER_TRANSFER_SQL = """
create or replace function post_transfer(p_id text, p_debit text, p_credit text, p_amount bigint)
returns text language plpgsql as $$
declare inserted int;
begin
  -- lock both accounts in id order first: the transfer's foreign keys would otherwise take share
  -- locks in argument order and deadlock against a concurrent transfer between the same accounts
  perform 1 from accounts where id in (p_debit, p_credit) order by id for update;
  insert into transfers (id, partition, mode, kind, debit_account_id, credit_account_id, amount_minor,
                         currency, request, applied_at_us)
  values (p_id, 0, 'posted', 'payment', p_debit, p_credit, p_amount, 'EUR', '{}'::jsonb, 0)
  on conflict (id) do nothing;
  get diagnostics inserted = row_count;
  if inserted = 0 then return 'exists'; end if;
  update accounts set debits_posted_minor = debits_posted_minor + p_amount where id = p_debit;
  update accounts set credits_posted_minor = credits_posted_minor + p_amount where id = p_credit;
  return 'ok';
end $$;
"""


@dataclass(frozen=True)
class Timing:
    """Wall time of a run, and the CPU the writer (this process) and its PostgreSQL backends spent in it."""

    seconds: float
    writer_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0


@dataclass(frozen=True)
class RunResult:
    mode: str
    pattern: str
    batch: int
    transfers: int
    timing: Timing
    invariants_hold: bool

    @property
    def per_second(self) -> float:
        return self.transfers / self.timing.seconds

    def cpu_us_per_transfer(self) -> tuple[float, float]:
        return (self.timing.writer_cpu_s * 1e6 / self.transfers, self.timing.postgres_cpu_s * 1e6 / self.transfers)


def _backend_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by local PostgreSQL backends, read from /proc."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    total_ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total_ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total_ticks / ticks_per_s


class CpuClock:
    """Measures wall time and the CPU of this process and of the given PostgreSQL backends."""

    def __init__(self, backend_pids: list[int]) -> None:
        self.backend_pids = backend_pids
        self.started_s = time.perf_counter()
        self.started_cpu_s = time.process_time()
        self.started_pg_cpu_s = _backend_cpu_s(backend_pids)

    def stop(self) -> Timing:
        return Timing(
            seconds=time.perf_counter() - self.started_s,
            writer_cpu_s=time.process_time() - self.started_cpu_s,
            postgres_cpu_s=_backend_cpu_s(self.backend_pids) - self.started_pg_cpu_s,
        )


def _accounts() -> list[str]:
    return [f"acct-{i:05d}" for i in range(ACCOUNT_COUNT)] + [HOT_ACCOUNT]


def _transfers(pattern: str, count: int, seed: int = 7) -> list[TransferRequest]:
    rng = random.Random(seed)
    accounts = _accounts()[:-1]
    requests = []
    for i in range(count):
        credit = rng.choice(accounts)
        debit = HOT_ACCOUNT if pattern == "hot" else rng.choice(accounts)
        while debit == credit:
            debit = rng.choice(accounts)
        requests.append(TransferRequest(f"t-{i}", TransferMode.POSTED, debit, credit, rng.randint(1, 10_000), "EUR"))
    return requests


async def _add_history(conn: asyncpg.Connection, transfers: int) -> None:
    """``transfers`` posted transfers of 1 minor unit from one history account to another (balances to
    match, so ``ledger verify`` holds), with random ids spread over the whole primary key."""
    await conn.execute(
        """insert into accounts (id, partition, currency, owner, internal, debits_posted_minor,
                                 credits_posted_minor, created_at_us)
           values ('history-debtor', 0, 'EUR', 'bench', true, $1, 0, 0),
                  ('history-creditor', 0, 'EUR', 'bench', true, 0, $1, 0)""",
        transfers,
    )
    await conn.execute(
        """insert into transfers (id, partition, mode, kind, debit_account_id, credit_account_id, amount_minor,
                                  currency, request, applied_at_us)
           select md5(g::text), 0, 'posted', 'payment', 'history-debtor', 'history-creditor', 1, 'EUR', '{}', 0
           from generate_series(1, $1) as g""",
        transfers,
    )
    await conn.execute("vacuum analyze transfers")


async def _fresh_shard(base_dsn: str, history: int = 0) -> str:
    name = f"ledger_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_dsn)
    await admin.execute(f'create database "{name}"')
    await admin.close()
    dsn = base_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    await migrate(conn, "payplane.ledger.migrations")
    await claim_partitions(conn, [0], "bench")
    ledger = Ledger()
    outcome = BatchOutcome(partition=0, epoch=1, now_us=0)
    for account_id in _accounts():
        ledger.create_account(AccountSpec(account_id, "EUR", "bench"), 0)
        outcome.new_accounts.append(ledger.accounts[account_id])
    await persist(conn, outcome, ledger)
    if history:
        await _add_history(conn, history)
    await conn.close()
    return dsn


async def _drop(base_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(base_dsn)
    await admin.execute(f'drop database if exists "{dsn.rsplit("/", 1)[1]}" with (force)')
    await admin.close()


async def _invariants_hold(dsn: str, expected_transfers: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        report = await verify(conn)
        applied = await conn.fetchval("select count(*) from transfers where debit_account_id <> 'history-debtor'")
    finally:
        await conn.close()
    return report.passed and applied == expected_transfers


async def run_writer(bootstrap: str, dsn: str, pattern: str, count: int, batch: int) -> Timing:
    topics = RailTopics(f"bench-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    names = [topics.ledger_commands, topics.dead_letters("bench")]
    await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    futures = [
        await producer.send(
            topics.ledger_commands,
            encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(r))),
            partition=0,
        )
        for r in _transfers(pattern, count)
    ]
    await asyncio.gather(*futures)
    await producer.stop()

    log = KafkaCommandLog(bootstrap, topics, "bench", [0])
    await log.start()
    store = PostgresLedgerStore(dsn, topics)
    writer = LedgerWriter(
        topic=topics.ledger_commands,
        partitions=[0],
        writer_id="bench",
        partition_of=partition_lookup(1),
        store=store,
        log_=log,
        batch_records_max=batch,
    )
    await writer.start()
    profiler = cProfile.Profile() if os.environ.get("PAYPLANE_BENCH_PROFILE") else None
    await store.load(set(), set())  # opens the read connection, so both backends are measured
    clock = CpuClock(store.backend_pids())
    if profiler:
        profiler.enable()
    while writer.applied_records < count:
        await writer.run_once()
    timing = clock.stop()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if os.environ.get("PAYPLANE_BENCH_PROFILE") == "callers":
            pstats.Stats(profiler).print_callers("instancecheck|enum.py")
    await log.stop()
    await store.close()
    await admin.delete_topics(names)
    await admin.close()
    return timing


async def run_relay(bootstrap: str, dsn: str, pattern: str, count: int, batch: int) -> Timing:
    """The writer's outbox relay publishing the outcomes of ``count`` transfers (one message each) to
    Kafka: the writer applies them first (untimed), then the relay drains the outbox."""
    await run_writer(bootstrap, dsn, pattern, count, batch)
    topics = RailTopics(f"bench-relay-{uuid.uuid4().hex[:8]}")
    conn = await asyncpg.connect(dsn)
    await conn.execute("update outbox set topic = $1", topics.ledger_results)
    await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topics.ledger_results, RESULTS_TOPIC_PARTITIONS, 1)])
    relay = OutboxRelay(dsn, bootstrap, kind=OutboxKind.LEDGER, source="bench", safety_poll_s=0.2)
    clock = CpuClock([])
    task = asyncio.create_task(relay.run())
    while relay.published < count:  # noqa: ASYNC110 (the relay exposes a counter, not an event)
        await asyncio.sleep(0.01)
    timing = clock.stop()
    relay.stop()
    await task
    await admin.delete_topics([topics.ledger_results])
    await admin.close()
    return timing


async def run_set_based(dsn: str, pattern: str, count: int, batch: int) -> Timing:
    conn = await asyncpg.connect(dsn, server_settings=KEY_LOOKUP_SESSION)
    requests = _transfers(pattern, count)
    clock = CpuClock([conn.get_server_pid()])
    for start in range(0, count, batch):
        chunk = requests[start : start + batch]
        account_ids, transfer_ids = ids_to_load(list(chunk), 0)
        ledger = await load_ledger(conn, account_ids, transfer_ids)
        applied = apply_batch(ledger, list(chunk), partition=0, partition_of=lambda _: 0, now_us=1)
        outcome = BatchOutcome(partition=0, epoch=1, now_us=1, changes=applied.changes)
        await persist(conn, outcome, ledger)
    timing = clock.stop()
    await conn.close()
    return timing


async def run_per_transfer(dsn: str, pattern: str, count: int) -> Timing:
    pool = await asyncpg.create_pool(dsn, min_size=PER_TRANSFER_CONNECTIONS, max_size=PER_TRANSFER_CONNECTIONS)
    async with pool.acquire() as conn:
        await conn.execute(PER_TRANSFER_SQL)
    queue = _transfers(pattern, count)
    position = 0

    async def worker() -> None:
        nonlocal position
        async with pool.acquire() as conn:
            while position < len(queue):
                r = queue[position]
                position += 1
                await conn.fetchval(
                    "select post_transfer($1, $2, $3, $4)",
                    r.id,
                    r.debit_account_id,
                    r.credit_account_id,
                    r.amount_minor,
                )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(PER_TRANSFER_CONNECTIONS)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return Timing(elapsed)


def _batches_for(mode: str, batches: list[int]) -> list[int]:
    """per-transfer has no batches; the relay's rate does not depend on the writer's batch size."""
    return {"per-transfer": [1], "relay": [max(batches)]}.get(mode, batches)


async def main(args: argparse.Namespace) -> None:
    tune_garbage_collector()  # as `payplane ledger-writer` does
    endpoints = read_endpoints(load_settings().endpoints_file)
    base_dsn, bootstrap = endpoints["PAYPLANE_POSTGRES_DSN"], endpoints["KAFKA_BOOTSTRAP"]
    plan: list[tuple[str, int, Callable[[str, str], object]]] = []
    results: list[RunResult] = []
    for pattern in args.patterns:
        for mode, batch in [(m, b) for m in args.modes for b in _batches_for(m, args.batches)]:
            count = args.transfers if batch > 1 or mode == "per-transfer" else min(args.transfers, 5_000)
            dsn = await _fresh_shard(base_dsn, args.history)
            try:
                if mode == "writer":
                    timing = await run_writer(bootstrap, dsn, pattern, count, batch)
                elif mode == "relay":
                    timing = await run_relay(bootstrap, dsn, pattern, count, batch)
                elif mode == "set-based":
                    timing = await run_set_based(dsn, pattern, count, batch)
                else:
                    timing = await run_per_transfer(dsn, pattern, count)
                result = RunResult(mode, pattern, batch, count, timing, await _invariants_hold(dsn, count))
            finally:
                await _drop(base_dsn, dsn)
            results.append(result)
            writer_cpu_us, postgres_cpu_us = result.cpu_us_per_transfer()
            cpu = f"  cpu/transfer: writer {writer_cpu_us:5.1f} us, postgres {postgres_cpu_us:5.1f} us"
            print(
                f"{mode:13} {pattern:8} batch={batch:5} transfers={count:7} {result.per_second:10,.0f}/s"
                f"  invariants={'ok' if result.invariants_hold else 'FAILED'}{cpu if timing.writer_cpu_s else ''}",
                flush=True,
            )
    del plan
    if args.json:
        print(json.dumps([dataclasses.asdict(r) | {"per_second": round(r.per_second)} for r in results]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--patterns", nargs="+", default=["uniform", "hot"])
    parser.add_argument("--modes", nargs="+", default=["writer", "set-based", "per-transfer"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 100, 1000])
    parser.add_argument("--history", type=int, default=0, help="earlier transfers in each shard (see above)")
    parser.add_argument("--json", action="store_true")
    asyncio.run(main(parser.parse_args()))
