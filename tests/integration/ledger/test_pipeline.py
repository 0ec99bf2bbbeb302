"""The writer's two-stage pipeline against real Kafka and PostgreSQL: while one batch commits the next is
decided on top of it. When the commit fails (before or after PostgreSQL committed), the next batch's
decisions are dropped and both are applied again from the database: every transfer is applied exactly
once, including transfers that depend on the failed batch (a hold created in it and posted in the next,
and retries of its transfers), and balances equal a pure reference run."""

import random

import asyncpg
import pytest

from payplane.adapters.ledger_verify import verify
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter, TransientError
from payplane.platform.metrics import LedgerWriterMetrics
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import produce_commands

BATCH = 10
ROLE = "ledger-writer"
ACCOUNTS = [AccountSpec("world", "EUR", "rail", AccountFlags(internal=True))] + [
    AccountSpec(f"acct-{i}", "EUR", "o", AccountFlags(debits_must_not_exceed_credits=True)) for i in range(6)
]


def _requests(seed: int) -> list[TransferRequest]:
    """Funding, random movements (some refused for funds), holds posted or voided one batch later, and
    retries of earlier ids: decisions that depend on the batch before them."""
    rng = random.Random(seed)
    requests = [TransferRequest(f"fund-{a.id}", TransferMode.POSTED, "world", a.id, 500, "EUR") for a in ACCOUNTS[1:]]
    for i in range(120):
        debit, credit = rng.sample([a.id for a in ACCOUNTS[1:]], 2)
        requests.append(TransferRequest(f"t{i}", TransferMode.POSTED, debit, credit, rng.randint(1, 300), "EUR"))
        if i % 7 == 0:
            requests.append(TransferRequest(f"h{i}", TransferMode.PENDING, debit, credit, 50, "EUR"))
        if i % 7 == 3 and i > 3:
            mode = TransferMode.POST_PENDING if i % 2 else TransferMode.VOID_PENDING
            requests.append(TransferRequest(f"r{i}", mode, pending_id=f"h{i - 3}"))
        if i % 11 == 5:
            requests.append(requests[rng.randrange(len(requests))])  # a retry: `exists`, never twice
    return requests


def _reference(requests: list[TransferRequest]) -> dict[str, int]:
    ledger = Ledger()
    for spec in ACCOUNTS:
        ledger.create_account(spec, 0)
    for request in requests:
        ledger.apply(request, 1)
    return {a.id: a.credits_posted_minor - a.debits_posted_minor for a in ledger.accounts.values()}


class FlakyStore(PostgresLedgerStore):
    """Fails the n-th write once: before anything reaches the database, or after it committed."""

    def __init__(self, dsn: str, topics: RailTopics, fail_write: int, after_commit: bool) -> None:
        super().__init__(dsn, topics)
        self.writes = 0
        self.fail_write = fail_write
        self.after_commit = after_commit

    async def write(self, prepared: object) -> None:
        self.writes += 1
        if self.writes == self.fail_write and not self.after_commit:
            raise TransientError("injected: connection lost before the commit")
        await super().write(prepared)
        if self.writes == self.fail_write:
            raise TransientError("injected: connection lost after the commit")


@pytest.mark.parametrize(("fail_write", "after_commit"), [(3, False), (3, True), (6, False), (9, True)])
async def test_a_failed_commit_in_flight_loses_and_repeats_nothing(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str, fail_write: int, after_commit: bool
) -> None:
    requests = _requests(seed=fail_write)
    values = [encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(a))) for a in ACCOUNTS]
    values += [encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(r))) for r in requests]
    await produce_commands(infra["KAFKA_BOOTSTRAP"], rail.ledger_commands, values)

    log = KafkaCommandLog(infra["KAFKA_BOOTSTRAP"], rail, ROLE, [0])
    await log.start()
    store = FlakyStore(shard_dsn, rail, fail_write, after_commit)
    metrics = LedgerWriterMetrics()
    writer = LedgerWriter(
        topic=rail.ledger_commands,
        partitions=[0],
        writer_id="w",
        store=store,
        log_=log,
        partition_of=partition_lookup(1),
        batch_records_max=BATCH,
        observer=metrics,
    )
    lag_seen: list[float] = []
    try:
        await writer.start()
        for _ in range(500):
            lag_seen.append(
                metrics.registry.get_sample_value("payplane_ledger_consumer_lag_records", {"partition": "0"}) or 0
            )
            if writer.applied_records >= len(values):
                break
            await writer.run_once()
        await writer.drain()
    finally:
        await log.stop()
        await store.close()

    assert store.writes > fail_write  # the failure happened with batches still to come
    assert max(lag_seen) >= len(values) - 3 * BATCH  # a backlog shows as lag while it is consumed …
    assert (
        metrics.registry.get_sample_value("payplane_ledger_consumer_lag_records", {"partition": "0"}) == 0
    )  # … 0 after
    assert writer.applied_records >= len(values)
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances == _reference(requests)
    unique_ids = {r.id for r in requests}
    applied = await shard.fetchval("select count(*) from transfers")
    refused = await shard.fetchval("select count(*) from rejections")
    assert applied + refused == len(unique_ids)
    assert await shard.fetchval("select next_offset from consumed_offsets") == len(values)
    report = await verify(shard)
    assert report.passed, report
