"""Two ledger writers (one per partition) on real Kafka and PostgreSQL, joined by the outbox relay:
a cross-partition payment completes, a refused one is reversed, and each gets one final outcome."""

import asyncio
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from payplane.adapters.ledger_verify import cross_partition_check, verify
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.adapters.outbox_relay import OutboxKind, OutboxRelay
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.partitions import ledger_partition_for_account
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import outcomes_in_outbox

RAIL_PARTITIONS = PARTITIONS = 2
GROUP = "ledger-writer"
CUSTOMER = AccountFlags(debits_must_not_exceed_credits=True)
partition_of = partition_lookup(PARTITIONS)


def _name_on(partition: int, prefix: str) -> str:
    return next(
        f"{prefix}-{i}" for i in range(1000) if ledger_partition_for_account(f"{prefix}-{i}", PARTITIONS) == partition
    )


PAYER, MERCHANT, FROZEN = _name_on(0, "payer"), _name_on(1, "merchant"), _name_on(1, "frozen")
CAPPED = _name_on(1, "capped")


async def _send(bootstrap: str, topic: str, commands: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, value in commands:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


def _account(spec: AccountSpec) -> tuple[int, bytes]:
    return partition_of(spec.id), encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(spec)))


def _transfer(request: TransferRequest) -> tuple[int, bytes]:
    payload = encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(request)))
    return partition_of(request.debit_account_id), payload


def _payer_and_merchant(world: str) -> list[tuple[int, bytes]]:
    """The rail's world account, a payer funded with 1,000 from it (partition 0) and a merchant (partition 1)."""
    return [
        _account(AccountSpec(world, "EUR", "rail", AccountFlags(internal=True))),
        _account(AccountSpec(PAYER, "EUR", "payer", CUSTOMER)),
        _account(AccountSpec(MERCHANT, "EUR", "merchant", CUSTOMER)),
        _transfer(TransferRequest("fund", TransferMode.POSTED, world, PAYER, 1000, "EUR")),
    ]


async def test_two_writers_settle_cross_partition_payments(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    world = _name_on(0, "world")
    await _send(
        bootstrap,
        rail.ledger_commands,
        [
            *_payer_and_merchant(world),
            _transfer(TransferRequest("pay-ok", TransferMode.POSTED, PAYER, MERCHANT, 300, "EUR")),
            _transfer(TransferRequest("pay-missing", TransferMode.POSTED, PAYER, FROZEN, 200, "EUR")),
        ],
    )
    writers, logs = [], []
    for partition in range(PARTITIONS):
        log = KafkaCommandLog(bootstrap, rail, GROUP, [partition])
        await log.start()
        store = PostgresLedgerStore(shard_dsn, rail)
        writer = LedgerWriter(
            topic=rail.ledger_commands,
            partitions=[partition],
            writer_id=f"w{partition}",
            store=store,
            log_=log,
            partition_of=partition_of,
        )
        await writer.start()
        writers.append(writer)
        logs.append(log)
    relay = OutboxRelay(shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="xp", safety_poll_s=1.0)
    relay_task = asyncio.create_task(relay.run())
    try:
        outcomes: dict[str, str] = {}
        for _ in range(200):
            for writer in writers:
                await writer.run_once()
            outcomes = {o.transfer_id: o.result for o in await outcomes_in_outbox(shard, rail.ledger_results)}
            if {"pay-ok", "pay-missing"} <= outcomes.keys():
                break
        else:
            pytest.fail(f"cross-partition outcomes did not arrive; got {outcomes}")
    finally:
        relay.stop()
        await relay_task
        for log in logs:
            await log.stop()
    assert outcomes["pay-ok"] == "ok"
    assert outcomes["pay-missing"] == "credit_account_not_found"
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances[PAYER] == 700
    assert balances[MERCHANT] == 300
    in_transit = sum(v for k, v in balances.items() if k.startswith("~transit:"))
    assert in_transit == 0
    report = await verify(shard)
    assert report.passed, report.render()
    cross = await cross_partition_check([shard], now_us=time.time_ns() // 1000)
    assert cross.passed, cross.violations

    # a first leg whose credit leg never came: in flight while young, a violation once old
    await shard.execute(
        """insert into transfers (id, partition, mode, kind, debit_account_id, credit_account_id, amount_minor,
                                  currency, request, applied_at_us)
           values ('lost', 0, 'posted', 'payment', $1, '~transit:EUR:0', 5, 'EUR',
                   '{"forward_to": "somebody"}'::jsonb, $2)""",
        PAYER,
        1_000_000_000,
    )
    young = await cross_partition_check([shard], now_us=1_000_000_000 + 5_000_000)
    old = await cross_partition_check([shard], now_us=1_000_000_000 + 120_000_000)
    assert young.passed
    assert old.violation_count == 1
    assert old.violations[0].startswith("lost: neither credited nor reversed")


async def _run_until_outcomes(
    writer: LedgerWriter, shard: asyncpg.Connection, rail: RailTopics, ids: set[str]
) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for _ in range(200):
        await writer.run_once()
        outcomes = {o.transfer_id: o.result for o in await outcomes_in_outbox(shard, rail.ledger_results)}
        if ids <= outcomes.keys():
            return outcomes
    pytest.fail(f"outcomes of {sorted(ids)} did not arrive; got {outcomes}")


async def test_a_writer_owning_both_partitions_posts_both_legs_in_one_batch(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    """No leg goes through the outbox and Kafka when the writer owns the other partition too: with no relay
    running, the credit leg, or a refused credit leg's reversal, are applied in the batch of the first leg."""
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    world = _name_on(0, "world")
    log = KafkaCommandLog(bootstrap, rail, GROUP, [0, 1])
    await log.start()
    writer = LedgerWriter(
        topic=rail.ledger_commands,
        partitions=[0, 1],
        writer_id="both",
        store=PostgresLedgerStore(shard_dsn, rail),
        log_=log,
        partition_of=partition_of,
    )
    await writer.start()
    relay = OutboxRelay(shard_dsn, bootstrap, kind=OutboxKind.LEDGER, source="xp-both", safety_poll_s=1.0)
    try:
        # the first payment into partition 1 opens its transit account (through the outbox: the batch
        # that made the leg did not know whether that account existed yet)
        await _send(
            bootstrap,
            rail.ledger_commands,
            [
                _account(AccountSpec(CAPPED, "EUR", "capped", AccountFlags(credits_must_not_exceed_debits=True))),
                *_payer_and_merchant(world),
                _transfer(TransferRequest("pay-first", TransferMode.POSTED, PAYER, MERCHANT, 100, "EUR")),
            ],
        )
        relay_task = asyncio.create_task(relay.run())
        try:
            first = await _run_until_outcomes(writer, shard, rail, {"pay-first"})
        finally:
            relay.stop()
            await relay_task
        assert first["pay-first"] == "ok"
        legs_sent = await shard.fetchval("select count(*) from outbox where topic = $1", rail.ledger_commands)

        await _send(
            bootstrap,
            rail.ledger_commands,
            [
                _transfer(TransferRequest("pay-ok", TransferMode.POSTED, PAYER, MERCHANT, 300, "EUR")),
                _transfer(TransferRequest("pay-capped", TransferMode.POSTED, PAYER, CAPPED, 200, "EUR")),
            ],
        )
        outcomes = await _run_until_outcomes(writer, shard, rail, {"pay-ok", "pay-capped"})
    finally:
        await log.stop()
    assert outcomes["pay-ok"] == "ok"
    assert outcomes["pay-capped"] == "exceeds_debits"  # the credit leg refused, the first leg reversed
    assert await shard.fetchval("select count(*) from outbox where topic = $1", rail.ledger_commands) == legs_sent
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances[PAYER] == 600
    assert balances[MERCHANT] == 400
    assert sum(v for k, v in balances.items() if k.startswith("~transit:")) == 0
    report = await verify(shard)
    assert report.passed, report.render()
    cross = await cross_partition_check([shard], now_us=time.time_ns() // 1000)
    assert cross.passed, cross.violations
