"""Ledger outcomes applied set-based, one transaction per fetched batch, on real PostgreSQL: duplicates in
a batch and redelivered batches change nothing, an expiry after the hold's answer cancels it once,
unknown transfers are ignored, refunds settle their refund row and the payment together."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from payplane.adapters.payments_store import Conn, IdempotencyClaim, PaymentsStore
from payplane.payments.fraud import Evaluation, Verdict
from payplane.payments.ledger_ops import AccountType
from payplane_contracts.ledger_messages import TransferOutcome
from payplane_contracts.topics import RailTopics

CLIENT = "cli_batch"
ALLOW = Evaluation(Verdict.ALLOW, "test")


@pytest.fixture
async def store(payments_dsn: str) -> AsyncIterator[PaymentsStore]:
    store = await PaymentsStore.open(payments_dsn, RailTopics("batch-test"), partitions=2)
    yield store
    await store.close()


def _claim() -> IdempotencyClaim:
    return IdempotencyClaim(CLIENT, uuid.uuid4().hex, uuid.uuid4().hex, 3600)


async def _account(store: PaymentsStore, account_type: AccountType) -> str:
    async def body(conn: Conn) -> bytes:
        row = await store.create_account(conn, CLIENT, "EUR", account_type, "")
        return str(row["id"]).encode()

    raw, _ = await store.run_idempotent(_claim(), body)
    return raw.decode()


async def _payment(store: PaymentsStore, source: str, wallet: str, capture_method: str) -> str:
    fields = {
        "amount_minor": 1000,
        "currency": "EUR",
        "capture_method": capture_method,
        "source_account_id": source,
        "destination_account_id": wallet,
    }
    raw, replayed = await store.create_payment(_claim(), fields, ALLOW, lambda row: str(row["id"]).encode())
    assert not replayed
    return raw.decode()


def _outcome(transfer_id: str, result: str = "ok") -> TransferOutcome:
    return TransferOutcome(transfer_id, result, 0, 1, transfer_id.split(".", maxsplit=1)[0])


async def _rows(store: PaymentsStore) -> tuple[dict[str, dict[str, Any]], int]:
    async with store.pool.acquire() as conn:
        payments = {r["id"]: dict(r) for r in await conn.fetch("select * from payments")}
        events = await conn.fetchval("select count(*) from outbox where topic like '%.payments.events'")
    return payments, int(events)


async def test_duplicates_and_redelivered_batches_change_nothing(store: PaymentsStore) -> None:
    source, wallet = await _account(store, AccountType.EXTERNAL), await _account(store, AccountType.WALLET)
    charged = await _payment(store, source, wallet, "automatic")
    held = await _payment(store, source, wallet, "manual")
    refused = await _payment(store, source, wallet, "automatic")
    batch = [
        _outcome(charged),
        _outcome(charged),  # the same outcome twice in one batch
        _outcome(held),
        _outcome(refused, "insufficient_funds"),
        _outcome("pay_not_ours"),
    ]

    changes = await store.apply_outcomes(batch)
    assert sorted((c.payment_id, c.old_status, c.new_status) for c in changes) == sorted(
        [(charged, "processing", "succeeded"), (held, "processing", "authorized"), (refused, "processing", "failed")]
    )
    payments, events = await _rows(store)
    assert payments[charged]["captured_minor"] == 1000
    assert payments[refused]["failure_code"] == "insufficient_funds"
    assert events == 3

    assert await store.apply_outcomes(batch) == []  # the whole batch redelivered
    assert await _rows(store) == (payments, events)

    # the ledger releases the uncaptured hold: canceled once, however often the expiry arrives
    expired = await store.apply_outcomes([_outcome(held, "expired"), _outcome(held, "expired")])
    assert [(c.payment_id, c.new_status) for c in expired] == [(held, "canceled")]
    payments, events = await _rows(store)
    assert (payments[held]["status"], payments[held]["failure_code"]) == ("canceled", "authorization_expired")
    assert await store.apply_outcomes([_outcome(held, "expired")]) == []
    assert events == 4


async def test_a_refund_settles_with_its_payment_in_one_batch(store: PaymentsStore) -> None:
    source, wallet = await _account(store, AccountType.EXTERNAL), await _account(store, AccountType.WALLET)
    payment = await _payment(store, source, wallet, "automatic")
    await store.apply_outcomes([_outcome(payment)])

    async def refund(conn: Conn) -> bytes:
        row = await store.create_refund(conn, CLIENT, payment, 400)
        return str(row["id"]).encode()

    refund_id = (await store.run_idempotent(_claim(), refund))[0].decode()
    changes = await store.apply_outcomes([_outcome(refund_id), _outcome(refund_id), _outcome(payment)])
    assert [(c.old_status, c.new_status) for c in changes] == [("succeeded", "partially_refunded")]
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow("select * from payments where id = $1", payment)
        refund_row = await conn.fetchrow("select * from refunds where id = $1", refund_id)
    assert row is not None
    assert refund_row is not None
    assert (row["refunded_minor"], row["refund_pending_minor"]) == (400, 0)
    assert refund_row["status"] == "succeeded"


async def test_a_batch_of_nothing_ours_writes_nothing(store: PaymentsStore, payments_dsn: str) -> None:
    assert await store.apply_outcomes([]) == []
    assert await store.apply_outcomes([_outcome("pay_elsewhere"), _outcome("re_elsewhere", "exists")]) == []
    conn = await asyncpg.connect(payments_dsn)
    try:
        assert await conn.fetchval("select count(*) from outbox") == 0
    finally:
        await conn.close()
