"""Group commit of new payments on real PostgreSQL: concurrent CreatePayment calls are written by one
statement, and each caller still gets its own exact answer — a new payment, the replay of a duplicate in
the same batch, 422 for the same key with another body — with exactly one payment, ledger operation and
outbox row per key. A row the database refuses fails only its own caller."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from payplane.adapters.payments_store import Conn, IdempotencyClaim, PaymentsStore
from payplane.payments.errors import ApiError
from payplane.payments.fraud import Evaluation, Verdict
from payplane.payments.ledger_ops import AccountType
from payplane_contracts.topics import RailTopics

CLIENT = "cli_group"
ALLOW = Evaluation(Verdict.ALLOW, "test")


@pytest.fixture
async def batches() -> list[int]:
    return []


@pytest.fixture
async def store(payments_dsn: str, batches: list[int]) -> AsyncIterator[PaymentsStore]:
    store = await PaymentsStore.open(
        payments_dsn, RailTopics("group-test"), partitions=2, observe_create_batch=batches.append
    )
    yield store
    await store.close()


async def _account(store: PaymentsStore, account_type: AccountType) -> str:
    async def body(conn: Conn) -> bytes:
        row = await store.create_account(conn, CLIENT, "EUR", account_type, "")
        return str(row["id"]).encode()

    raw, _ = await store.run_idempotent(IdempotencyClaim(CLIENT, uuid.uuid4().hex, "fp", 3600), body)
    return raw.decode()


def _render(row: dict[str, Any]) -> bytes:
    return f"{row['id']}:{row['amount_minor']}:{row['description']}".encode()


async def _create(
    store: PaymentsStore, key: str, amount_minor: int, accounts: tuple[str, str], description: str = ""
) -> tuple[bytes, bool]:
    fields = {
        "amount_minor": amount_minor,
        "currency": "EUR",
        "capture_method": "automatic",
        "source_account_id": accounts[0],
        "destination_account_id": accounts[1],
        "description": description,
    }
    claim = IdempotencyClaim(CLIENT, key, f"fp-{amount_minor}-{description}", 3600)
    return await store.create_payment(claim, fields, ALLOW, _render)


async def _counts(store: PaymentsStore) -> tuple[int, int, int, int]:
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            """select (select count(*) from payments), (select count(*) from ledger_ops),
                      (select count(*) from outbox where topic like '%.ledger.commands'
                                                         and payload like '%"transfer"%'),
                      (select count(*) from idempotency_keys where fingerprint like 'fp-%')"""
        )
    assert row is not None
    return row[0], row[1], row[2], row[3]


async def test_one_batch_answers_new_duplicate_and_conflicting_callers_each_correctly(
    store: PaymentsStore, batches: list[int]
) -> None:
    accounts = (await _account(store, AccountType.EXTERNAL), await _account(store, AccountType.WALLET))
    await _create(store, uuid.uuid4().hex, 1, accounts)  # warms the account cache: no read inside the batch
    batches.clear()
    keys = [uuid.uuid4().hex for _ in range(40)]
    calls = [_create(store, key, 100 + i, accounts) for i, key in enumerate(keys)]
    calls += [_create(store, keys[i], 100 + i, accounts) for i in range(0, 40, 4)]  # same body: replay
    calls += [_create(store, keys[i], 999, accounts) for i in range(1, 40, 4)]  # same key, other body: 422
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert batches == [len(calls)], "every call of one event-loop turn shares one statement"
    originals = results[:40]
    assert all(isinstance(r, tuple) and r[1] is False for r in originals)
    ids = {r[0].split(b":")[0] for r in originals if isinstance(r, tuple)}
    assert len(ids) == 40
    for n, i in enumerate(range(0, 40, 4)):
        assert results[40 + n] == (originals[i][0], True)  # type: ignore[index] - byte-identical replay
    for n in range(10):
        refused = results[50 + n]
        assert isinstance(refused, ApiError)
        assert refused.code == "idempotency_key_reused"
    assert await _counts(store) == (41, 41, 41, 41)

    # a retry after the batch replays the stored answer too
    again = await _create(store, keys[7], 107, accounts)
    assert again == (originals[7][0], True)  # type: ignore[index]


async def test_a_row_the_database_refuses_fails_only_its_caller(store: PaymentsStore, batches: list[int]) -> None:
    accounts = (await _account(store, AccountType.EXTERNAL), await _account(store, AccountType.WALLET))
    await _create(store, uuid.uuid4().hex, 1, accounts)
    batches.clear()
    good = [_create(store, uuid.uuid4().hex, 200 + i, accounts) for i in range(5)]
    bad = _create(store, uuid.uuid4().hex, 300, accounts, description="nul \x00 byte")  # text refuses NUL
    results = await asyncio.gather(*good, bad, *good_again(store, accounts), return_exceptions=True)

    assert batches == [8], "one statement was tried for all, then each payment alone"
    assert isinstance(results[5], asyncpg.PostgresError), results[5]
    assert all(isinstance(r, tuple) and r[1] is False for i, r in enumerate(results) if i != 5)
    assert await _counts(store) == (8, 8, 8, 8)


def good_again(store: PaymentsStore, accounts: tuple[str, str]) -> list[Any]:
    return [_create(store, uuid.uuid4().hex, 400 + i, accounts) for i in range(2)]
