"""Stateful property test against the real store: random accounts, transfers, holds, posts, voids,
expiries and retries go through PostgreSQL (load → apply → persist, as the writer does) and through a
pure in-memory reference; after every step the results and every balance must agree."""

import asyncio
import itertools
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from payplane.adapters import ledger_store
from payplane.adapters.postgres_migrations import migrate
from payplane.ledger.batch import apply_batch, ids_to_load
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from tests.integration.conftest import Infra

S = 1_000_000
_examples = itertools.count()


class _Db:
    """One event loop and connection for the whole (synchronous) hypothesis run."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(dsn))
        self.run(migrate(self.conn, ledger_store.MIGRATIONS_PACKAGE))
        self.run(ledger_store.claim_partitions(self.conn, [0], "stateful"))

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.close()


@pytest.fixture
def db(infra: Infra) -> Iterator[_Db]:
    base = infra["PAYPLANE_POSTGRES_DSN"]
    name = f"ledger_stateful_{uuid.uuid4().hex[:8]}"
    loop = asyncio.new_event_loop()

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base)
        await conn.execute(sql)
        await conn.close()

    loop.run_until_complete(admin(f'create database "{name}"'))
    database = _Db(base.rsplit("/", 1)[0] + "/" + name)
    try:
        yield database
    finally:
        database.close()
        loop.run_until_complete(admin(f'drop database if exists "{name}" with (force)'))
        loop.close()


def test_store_agrees_with_the_reference(db: _Db) -> None:
    class StoreVsReference(RuleBasedStateMachine):
        @initialize()
        def open_accounts(self) -> None:
            self.prefix = f"x{next(_examples)}-"
            self.reference = Ledger()
            self.now_us = 0
            self.sent: list[TransferRequest] = []
            self.counter = 0
            specs = [
                AccountSpec(self.prefix + "world", "EUR", "rail", AccountFlags(internal=True)),
                AccountSpec(self.prefix + "a", "EUR", "a", AccountFlags(debits_must_not_exceed_credits=True)),
                AccountSpec(
                    self.prefix + "b",
                    "EUR",
                    "b",
                    AccountFlags(debits_must_not_exceed_credits=True),
                    overdraft_limit_minor=50,
                ),
                AccountSpec(self.prefix + "c", "EUR", "c", AccountFlags(credits_must_not_exceed_debits=True)),
                AccountSpec(self.prefix + "y", "JPY", "y"),
            ]
            self.names = [s.id for s in specs]
            for spec in specs:
                self._both(spec)

        def _both(self, command: AccountSpec | TransferRequest) -> str:
            """Apply to the store (through PostgreSQL) and to the reference; return the reference's answer."""
            accounts, transfers = ids_to_load([command], 0)
            loaded = db.run(ledger_store.load_ledger(db.conn, accounts, transfers))
            applied = apply_batch(loaded, [command], partition=0, partition_of=lambda _: 0, now_us=self.now_us)
            outcome = ledger_store.BatchOutcome(
                partition=0, epoch=1, now_us=self.now_us, new_accounts=applied.new_accounts, changes=applied.changes
            )
            db.run(ledger_store.persist(db.conn, outcome, loaded))
            expected = apply_batch(self.reference, [command], partition=0, partition_of=lambda _: 0, now_us=self.now_us)
            got = [o.result for o in applied.outcomes]
            want = [o.result for o in expected.outcomes]
            assert got == want, f"{command}: store said {got}, reference {want}"
            return want[0] if want else ""

        @rule(
            debit=st.integers(0, 4),
            credit=st.integers(0, 5),
            amount=st.integers(-1, 1500),
            pending=st.booleans(),
            timeout_s=st.sampled_from([0, 0, 3]),
            currency=st.sampled_from(["EUR", "JPY"]),
        )
        def transfer(self, debit: int, credit: int, amount: int, pending: bool, timeout_s: int, currency: str) -> None:
            self.counter += 1
            names = [*self.names, self.prefix + "ghost"]
            request = TransferRequest(
                f"{self.prefix}t{self.counter}",
                TransferMode.PENDING if pending else TransferMode.POSTED,
                names[debit],
                names[credit],
                amount,
                currency,
                timeout_s=timeout_s if pending else 0,
            )
            self.sent.append(request)
            self._both(request)

        @rule(data=st.data(), post=st.booleans(), partial=st.sampled_from([None, 1, 100, 5000]))
        def resolve(self, data: st.DataObject, post: bool, partial: int | None) -> None:
            holds = [t for t in self.reference.transfers.values() if t.pending_state is not None]
            if not holds:
                return
            hold = data.draw(st.sampled_from(holds))
            self.counter += 1
            request = TransferRequest(
                f"{self.prefix}r{self.counter}",
                TransferMode.POST_PENDING if post else TransferMode.VOID_PENDING,
                pending_id=hold.id,
                amount_minor=partial if post else None,
            )
            self.sent.append(request)
            self._both(request)

        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            if self.sent:
                self._both(data.draw(st.sampled_from(self.sent)))

        @rule(seconds=st.integers(1, 5))
        def time_passes(self, seconds: int) -> None:
            self.now_us += seconds * S
            due = db.run(ledger_store.due_holds(db.conn, 0, self.now_us, 100))
            due = [d for d in due if d.startswith(self.prefix)]
            loaded = db.run(ledger_store.load_ledger(db.conn, set(), set(due)))
            changes = [c for c in (loaded.expire(d, self.now_us) for d in due) if c]
            outcome = ledger_store.BatchOutcome(partition=0, epoch=1, now_us=self.now_us, changes=changes)
            db.run(ledger_store.persist(db.conn, outcome, loaded))
            expired_in_reference = [t for t in list(self.reference.transfers) if self.reference.expire(t, self.now_us)]
            assert sorted(due) == sorted(expired_in_reference)

        @invariant()
        def balances_agree(self) -> None:
            if not hasattr(self, "reference"):
                return
            rows = db.run(
                db.conn.fetch(
                    "select id, debits_pending_minor, debits_posted_minor, credits_pending_minor, credits_posted_minor"
                    " from accounts where id like $1",
                    self.prefix + "%",
                )
            )
            stored = {r["id"]: tuple(r.values())[1:] for r in rows}
            assert stored == {a.id: a.balances() for a in self.reference.accounts.values()}

    StoreVsReference.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
    StoreVsReference.TestCase().runTest()
