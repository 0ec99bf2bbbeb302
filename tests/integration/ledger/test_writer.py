"""The ledger writer against real Kafka and PostgreSQL: batches applied once, bad records
dead-lettered with their reason, positions resumed from the database, stale writers fenced."""

import asyncio
import json
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from payplane.adapters.ledger_store import FencedError
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter
from payplane.platform.metrics import LedgerWriterMetrics
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import outcomes_in_outbox

GROUP = "ledger-writer"
CUSTOMER = AccountFlags(debits_must_not_exceed_credits=True)


def _account(spec: AccountSpec) -> bytes:
    return encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(spec)))


def _transfer(request: TransferRequest) -> bytes:
    return encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(request)))


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, partition=0)
    finally:
        await producer.stop()


async def _writer(
    infra: Infra,
    rail: RailTopics,
    dsn: str,
    writer_id: str,
    metrics: LedgerWriterMetrics | None = None,
    expiry_sweep_interval_s: float = 1.0,
) -> tuple[LedgerWriter, KafkaCommandLog]:
    commands = KafkaCommandLog(infra["KAFKA_BOOTSTRAP"], rail, GROUP, [0])
    await commands.start()
    store = PostgresLedgerStore(dsn, rail)
    writer = LedgerWriter(
        topic=rail.ledger_commands,
        partitions=[0],
        writer_id=writer_id,
        store=store,
        log_=commands,
        partition_of=partition_lookup(1),
        observer=metrics,
        expiry_sweep_interval_s=expiry_sweep_interval_s,
    )
    await writer.start()
    return writer, commands


async def _drain(writer: LedgerWriter, expected_records: int, max_rounds: int = 100) -> None:
    for _ in range(max_rounds):
        if writer.applied_records >= expected_records:
            return
        await writer.run_once()
    pytest.fail(f"writer consumed {writer.applied_records} of {expected_records} records in {max_rounds} rounds")


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[tuple[bytes | None, dict[str, bytes]]] = []
    try:
        for _ in range(50):
            batches = await consumer.getmany(timeout_ms=200)
            got += [(r.value, dict(r.headers)) for rs in batches.values() for r in rs]
            if len(got) >= count:
                break
    finally:
        await consumer.stop()
    return got


COMMANDS = [
    _account(AccountSpec("world", "EUR", "rail", AccountFlags(internal=True))),
    _account(AccountSpec("alice", "EUR", "alice", CUSTOMER)),
    _account(AccountSpec("bob", "EUR", "bob", CUSTOMER)),
    _transfer(TransferRequest("fund", TransferMode.POSTED, "world", "alice", 1000, "EUR")),
    b"{not json",
    json.dumps({"v": 99, "type": "transfer", "body": {}}).encode(),
    _transfer(TransferRequest("pay-1", TransferMode.POSTED, "alice", "bob", 400, "EUR", payment_ref="pi_1")),
    encode_command(LedgerCommand(CommandType.TRANSFER, {"id": "x", "mode": "posted", "amount_minor": 1.5})),
    _transfer(TransferRequest("pay-2", TransferMode.POSTED, "alice", "bob", 700, "EUR")),  # insufficient
]


async def test_writer_applies_dead_letters_resumes_and_fences(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    await _produce(bootstrap, rail.ledger_commands, COMMANDS)
    metrics = LedgerWriterMetrics()
    first, first_log = await _writer(infra, rail, shard_dsn, "writer-a", metrics)
    try:
        await _drain(first, len(COMMANDS))
    finally:
        await first_log.stop()

    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances == {"world": -1000, "alice": 600, "bob": 400}
    outcomes = await outcomes_in_outbox(shard)
    assert [(o.transfer_id, o.result) for o in outcomes] == [
        ("fund", "ok"),
        ("pay-1", "ok"),
        ("pay-2", "insufficient_funds"),
    ]
    assert outcomes[1].payment_ref == "pi_1"
    assert await shard.fetchval("select next_offset from consumed_offsets") == len(COMMANDS)
    sample = metrics.registry.get_sample_value
    assert sample("payplane_ledger_transfers_total", {"partition": "0", "result": "ok"}) == 2
    assert sample("payplane_ledger_transfers_total", {"partition": "0", "result": "insufficient_funds"}) == 1
    assert sample("payplane_ledger_dead_letters_total", {"partition": "0"}) == 3
    assert sample("payplane_ledger_committed_offset", {"partition": "0"}) == len(COMMANDS)

    dead = await _read_all(bootstrap, rail.dead_letters(GROUP), 3)
    reasons = sorted(h["reason"].decode() for _, h in dead)
    assert len(dead) == 3
    assert any("not JSON" in r for r in reasons)
    assert any("schema version 99" in r for r in reasons)
    assert any(r.startswith("amount_minor:") for r in reasons)
    assert {h["original_offset"] for _, h in dead} == {b"4", b"5", b"7"}

    # a second writer takes over: resumes at the database's position, applies nothing twice
    second, second_log = await _writer(infra, rail, shard_dsn, "writer-b")
    try:
        assert await second.run_once() == 0
        # a redelivery of the whole stream (e.g. a producer retrying everything) changes no balance
        await _produce(bootstrap, rail.ledger_commands, COMMANDS)
        await _drain(second, len(COMMANDS))
    finally:
        await second_log.stop()
    again = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert again == balances
    results = [o.result for o in await outcomes_in_outbox(shard)]
    assert results[3:] == ["exists", "exists", "insufficient_funds"]
    assert await shard.fetchval("select count(*) from transfers") == 2

    # the first writer, now stale, cannot commit anything
    stale_log = KafkaCommandLog(bootstrap, rail, GROUP, [0])
    await stale_log.start()
    try:
        first.commands = stale_log
        await stale_log.seek({0: 0})
        with pytest.raises(FencedError):
            await first.run_once()
    finally:
        await stale_log.stop()
    assert await shard.fetchval("select count(*) from transfers") == 2


async def test_holds_expire_on_their_own(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    bootstrap = infra["KAFKA_BOOTSTRAP"]
    commands = [
        *COMMANDS[:4],
        _transfer(
            TransferRequest("hold", TransferMode.PENDING, "alice", "bob", 250, "EUR", timeout_s=1, payment_ref="pi_h")
        ),
    ]
    await _produce(bootstrap, rail.ledger_commands, commands)
    # only the explicit sweeps below may expire the hold, however slowly the machine runs the drain
    writer, log = await _writer(infra, rail, shard_dsn, "writer-expiry", expiry_sweep_interval_s=3600)
    try:
        await _drain(writer, len(commands))
        assert await shard.fetchval("select debits_pending_minor from accounts where id = 'alice'") == 250
        await asyncio.sleep(1.1)
        assert await writer.expire_due_holds(0, time.time_ns() // 1000) == 1
        assert await writer.expire_due_holds(0, time.time_ns() // 1000) == 0, "a hold expires once"
    finally:
        await log.stop()
    assert await shard.fetchval("select pending_state from transfers where id = 'hold'") == "expired"
    assert await shard.fetchval("select debits_pending_minor from accounts where id = 'alice'") == 0
    last = (await outcomes_in_outbox(shard))[-1]
    assert (last.transfer_id, last.result, last.payment_ref) == ("hold", "expired", "pi_h")


async def _apply_in_rounds(
    infra: Infra, rail: RailTopics, dsn: str, rounds: list[list[bytes]], metrics: LedgerWriterMetrics
) -> None:
    """Each round is produced and fully committed before the next: later rounds meet earlier rounds' ids
    only in the database (not in the writer's memory nor in its batch in flight)."""
    writer, log_ = await _writer(infra, rail, dsn, "writer-rounds", metrics)
    produced = 0
    try:
        for values in rounds:
            await _produce(infra["KAFKA_BOOTSTRAP"], rail.ledger_commands, values)
            produced += len(values)
            await _drain(writer, produced)
            await writer.drain()
    finally:
        await log_.stop()


SETUP = COMMANDS[:3]


async def test_a_redelivered_refusal_keeps_its_answer_after_funds_arrive(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    """Batches are decided as if their ids were new, but refusals are looked up: a refused id coming back
    once it could succeed still gets its first answer, without a rolled-back commit."""
    late = _transfer(TransferRequest("pay-late", TransferMode.POSTED, "alice", "bob", 500, "EUR"))
    fund = _transfer(TransferRequest("fund", TransferMode.POSTED, "world", "alice", 1000, "EUR"))
    metrics = LedgerWriterMetrics()
    await _apply_in_rounds(infra, rail, shard_dsn, [[*SETUP, late], [fund], [late]], metrics)

    results = [(o.transfer_id, o.result) for o in await outcomes_in_outbox(shard)]
    assert results == [("pay-late", "insufficient_funds"), ("fund", "ok"), ("pay-late", "insufficient_funds")]
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances == {"world": -1000, "alice": 1000, "bob": 0}
    assert metrics.registry.get_sample_value("payplane_ledger_batches_redecided_total", {"partition": "0"}) is None


async def test_a_redelivered_transfer_is_exists_even_when_it_could_not_post_now(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    """An applied id coming back when its accounts could no longer pay it answers ``exists``, not a refusal
    (the commit meets it among the transfers, rolls back and decides the batch again), moving no money."""
    fund = _transfer(TransferRequest("fund", TransferMode.POSTED, "world", "alice", 1000, "EUR"))
    pay = _transfer(TransferRequest("pay-1", TransferMode.POSTED, "alice", "bob", 800, "EUR"))
    drain = _transfer(TransferRequest("pay-2", TransferMode.POSTED, "alice", "bob", 200, "EUR"))
    fresh = _transfer(TransferRequest("refund", TransferMode.POSTED, "bob", "alice", 100, "EUR"))
    metrics = LedgerWriterMetrics()
    await _apply_in_rounds(infra, rail, shard_dsn, [[*SETUP, fund, pay], [drain], [pay, fresh], [pay]], metrics)

    results = [(o.transfer_id, o.result) for o in await outcomes_in_outbox(shard)]
    assert results == [
        ("fund", "ok"),
        ("pay-1", "ok"),
        ("pay-2", "ok"),
        ("pay-1", "exists"),
        ("refund", "ok"),
        ("pay-1", "exists"),
    ]
    balances = dict(await shard.fetch("select id, credits_posted_minor - debits_posted_minor from accounts"))
    assert balances == {"world": -1000, "alice": 100, "bob": 900}
    assert await shard.fetchval("select count(*) from rejections") == 0
    # the round after a redecided batch looks its ids up: the last round costs no second rollback
    assert metrics.registry.get_sample_value("payplane_ledger_batches_redecided_total", {"partition": "0"}) == 1
