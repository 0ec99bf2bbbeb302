# ruff: noqa: S608 - the only interpolation is PAYMENT_COLUMNS, a constant; values are always bind parameters
"""The payment worker's PostgreSQL edge: idempotent writes, payments, accounts, refunds, ledger outcomes.

Every client write runs in one transaction that claims the idempotency key (the unique primary key of
``idempotency_keys`` is the truth; a concurrent duplicate waits on it and then replays), records the
change with the ledger command it needs (outbox) and stores the response to replay. Requests refused by
validation roll back entirely, claim included, so a corrected retry with the same key proceeds.

Ledger outcomes are applied once per ledger operation (``ledger_ops.result`` is set by the first), so a
redelivered outcome changes nothing.
"""

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from payplane.payments.errors import ApiError
from payplane.payments.fraud import Evaluation, Verdict
from payplane.payments.ledger_ops import (
    AccountType,
    LedgerOp,
    OpKind,
    OutgoingCommand,
    PaymentAccounts,
    RefundStatus,
    Resolution,
    account_command,
    expire_hold,
    initial_op,
    needs_hold,
    op_request,
    resolve,
    transfer_command,
)
from payplane.payments.state_machine import (
    CaptureMethod,
    Event,
    EventKind,
    IllegalTransitionError,
    Payment,
    PaymentStatus,
    apply,
)
from payplane_contracts.ledger_messages import TransferOutcome
from payplane_contracts.topics import RailTopics

Conn = asyncpg.Connection | PoolConnectionProxy
MIGRATIONS_PACKAGE: Final = "payplane.payments.migrations"
NOTIFY_SQL: Final = "select pg_notify('payplane_outbox', '')"
CLEANUP_BATCH_MAX: Final = 10_000

PAYMENT_COLUMNS: Final = (
    "id, client_id, amount_minor, currency, source_account_id, destination_account_id, capture_method, status,"
    " captured_minor, refunded_minor, refund_pending_minor, review, failure_code, description, pending_action,"
    " created_at_us, updated_at_us"
)


def _row(record: asyncpg.Record | None) -> dict[str, Any]:
    if record is None:
        raise LookupError("a row this transaction just wrote or locked is missing")
    return dict(record)


def now_us() -> int:
    return time.time_ns() // 1000


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class StatusChange:
    """A payment moved to another status because of a ledger outcome (reported to metrics)."""

    payment_id: str
    old_status: str
    new_status: str
    created_at_us: int
    changed_at_us: int


@dataclass(frozen=True)
class IdempotencyClaim:
    client_id: str
    key: str
    fingerprint: str
    retention_s: float


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    response: bytes


class ReplayedResponse(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, response: bytes) -> None:
        super().__init__("replayed")
        self.response = response


def state_of(row: asyncpg.Record | dict[str, Any]) -> Payment:
    return Payment(
        id=row["id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        capture_method=CaptureMethod(row["capture_method"]),
        status=PaymentStatus(row["status"]),
        captured_minor=row["captured_minor"],
        refunded_minor=row["refunded_minor"],
    )


class PaymentsStore:
    def __init__(self, pool: asyncpg.Pool, topics: RailTopics, partitions: int) -> None:
        self.pool = pool
        self.topics = topics
        self.partitions = partitions

    @classmethod
    async def open(cls, dsn: str, topics: RailTopics, partitions: int, pool_size: int = 10) -> "PaymentsStore":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, timeout=10)
        return cls(pool, topics, partitions)

    async def close(self) -> None:
        await self.pool.close()

    # --- the idempotency contract ---------------------------------------------------------------

    async def stored_response(self, client_id: str, key: str) -> StoredResponse | None:
        row = await self.pool.fetchrow(
            "select fingerprint, response from idempotency_keys where client_id = $1 and key = $2"
            " and expires_at > now()",
            client_id,
            key,
        )
        return StoredResponse(row["fingerprint"], bytes(row["response"])) if row else None

    async def run_idempotent(
        self, claim: IdempotencyClaim, body: Callable[[Conn], Awaitable[bytes]]
    ) -> tuple[bytes, bool]:
        """Run ``body`` once per (client, key): returns (response, replayed). Raises ApiError (422) for
        the same key with another body; ApiErrors raised by ``body`` roll everything back."""
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                """insert into idempotency_keys (client_id, key, fingerprint, response, expires_at)
                   values ($1, $2, $3, '', now() + make_interval(secs => $4))
                   on conflict (client_id, key) do update
                     set fingerprint = excluded.fingerprint, response = '', created_at = now(),
                         expires_at = excluded.expires_at
                     where idempotency_keys.expires_at <= now()
                   returning true""",
                claim.client_id,
                claim.key,
                claim.fingerprint,
                float(claim.retention_s),
            )
            if claimed:
                response = await body(conn)
                await conn.execute(
                    "update idempotency_keys set response = $3 where client_id = $1 and key = $2",
                    claim.client_id,
                    claim.key,
                    response,
                )
                return response, False
        stored = await self.stored_response(claim.client_id, claim.key)
        if stored is None:  # expired between the two statements: extremely unlikely, safe to ask for a retry
            raise ApiError("idempotency_key_in_use", "the request with this Idempotency-Key is being processed")
        return replay_or_refuse(stored, claim.fingerprint), True

    async def cleanup_expired_keys(self) -> int:
        deleted = await self.pool.fetchval(
            """with gone as (delete from idempotency_keys where ctid in (
                   select ctid from idempotency_keys where expires_at <= now() limit $1) returning 1)
               select count(*) from gone""",
            CLEANUP_BATCH_MAX,
        )
        return int(deleted)

    # --- writes (inside run_idempotent) ----------------------------------------------------------

    async def _outbox(self, conn: Conn, commands: Sequence[OutgoingCommand]) -> None:
        await conn.executemany(
            "insert into outbox (topic, kafka_partition, message_key, payload) values ($1, $2, $3, $4)",
            [(self.topics.ledger_commands, c.kafka_partition, c.key, c.payload) for c in commands],
        )
        await conn.execute(NOTIFY_SQL)

    async def _payment_event(self, conn: Conn, row: dict[str, Any]) -> None:
        event = {"v": 1, "id": new_id("evt"), "type": f"payment.{row['status']}", "payment_id": row["id"]}
        event |= {"client_id": row["client_id"], "status": row["status"], "at_us": row["updated_at_us"]}
        await conn.execute(
            "insert into outbox (topic, kafka_partition, message_key, payload) values ($1, null, $2, $3)",
            self.topics.payment_events,
            row["id"].encode(),
            json.dumps(event, separators=(",", ":")).encode(),
        )

    async def create_account(
        self, conn: Conn, client_id: str, currency: str, account_type: AccountType, description: str
    ) -> dict[str, Any]:
        account_id = new_id("acct")
        row = await conn.fetchrow(
            "insert into accounts (id, client_id, currency, type, description, created_at_us)"
            " values ($1, $2, $3, $4, $5, $6) returning *",
            account_id,
            client_id,
            currency,
            account_type.value,
            description,
            now_us(),
        )
        await self._outbox(conn, [account_command(account_id, currency, client_id, account_type, self.partitions)])
        return _row(row)

    async def _owned_account(self, conn: Conn, client_id: str, account_id: str, param: str) -> dict[str, Any]:
        row = await conn.fetchrow("select * from accounts where id = $1 and client_id = $2", account_id, client_id)
        if row is None:
            raise ApiError("resource_missing", f"no such account: {account_id!r}", param)
        return _row(row)

    async def create_payment(
        self,
        conn: Conn,
        client_id: str,
        fields: dict[str, Any],
        evaluation: Evaluation,
    ) -> dict[str, Any]:
        source = await self._owned_account(conn, client_id, fields["source_account_id"], "source")
        destination = await self._owned_account(conn, client_id, fields["destination_account_id"], "destination")
        if fields["source_account_id"] == fields["destination_account_id"]:
            raise ApiError("parameter_invalid", "source and destination must be different accounts", "destination")
        for account, param in ((source, "source"), (destination, "destination")):
            if account["currency"] != fields["currency"]:
                raise ApiError(
                    "currency_mismatch",
                    f"account {account['id']} holds {account['currency']}, the payment is in {fields['currency']}",
                    param,
                )
        at = now_us()
        payment = Payment(
            new_id("pay"), fields["amount_minor"], fields["currency"], CaptureMethod(fields["capture_method"])
        )
        review = evaluation.verdict is Verdict.REVIEW
        failure = ""
        if evaluation.verdict is Verdict.DECLINE:
            payment = apply(payment, Event(EventKind.FRAUD_DECLINED))
            failure = "fraud_declined"
        row = await conn.fetchrow(
            f"""insert into payments (id, client_id, amount_minor, currency, source_account_id,
                    destination_account_id, capture_method, status, review, fraud_rule, failure_code, description,
                    created_at_us, updated_at_us)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) returning {PAYMENT_COLUMNS}""",
            payment.id,
            client_id,
            payment.amount_minor,
            payment.currency,
            source["id"],
            destination["id"],
            payment.capture_method.value,
            payment.status.value,
            review,
            evaluation.rule,
            failure,
            fields.get("description", ""),
            at,
        )
        if payment.status is PaymentStatus.PROCESSING:
            op = initial_op(payment, needs_hold(payment.capture_method, review))
            await self._request(conn, op, payment, PaymentAccounts(source["id"], destination["id"]), at)
        else:
            await self._payment_event(conn, _row(row))
        return _row(row)

    async def _request(self, conn: Conn, op: LedgerOp, payment: Payment, accounts: PaymentAccounts, at: int) -> None:
        await conn.execute(
            "insert into ledger_ops (transfer_id, payment_id, kind, amount_minor, refund_id, requested_at_us)"
            " values ($1, $2, $3, $4, $5, $6)",
            op.transfer_id,
            op.payment_id,
            op.kind.value,
            op.amount_minor,
            op.refund_id,
            at,
        )
        request, debit_account = op_request(op, payment, accounts)
        await self._outbox(conn, [transfer_command(request, debit_account, self.partitions)])

    async def _payment_for_update(self, conn: Conn, client_id: str, payment_id: str) -> dict[str, Any]:
        row = await conn.fetchrow(
            f"select {PAYMENT_COLUMNS} from payments where id = $1 and client_id = $2 for update", payment_id, client_id
        )
        if row is None:
            raise ApiError("resource_missing", f"no such payment: {payment_id!r}", "id")
        return _row(row)

    async def capture_or_cancel(
        self, conn: Conn, client_id: str, payment_id: str, kind: OpKind, amount_minor: int | None
    ) -> dict[str, Any]:
        row = await self._payment_for_update(conn, client_id, payment_id)
        if row["pending_action"]:
            raise ApiError("payment_action_pending", f"a {row['pending_action']} of this payment is in progress")
        payment = state_of(row)
        event = Event(EventKind.CAPTURE, amount_minor) if kind is OpKind.CAPTURE else Event(EventKind.CANCEL)
        try:
            apply(payment, event)  # refused here, before anything is sent to the ledger
        except IllegalTransitionError as exc:
            param = "amount" if "amount" in str(exc) else ""
            code = "amount_invalid" if param else "payment_state_invalid"
            raise ApiError(code, str(exc), param) from None
        at = now_us()
        suffix = "capture" if kind is OpKind.CAPTURE else "void"
        op = LedgerOp(f"{payment.id}.{suffix}", kind, payment.id, amount_minor)
        accounts = PaymentAccounts(row["source_account_id"], row["destination_account_id"])
        await self._request(conn, op, payment, accounts, at)
        updated = await conn.fetchrow(
            f"update payments set pending_action = $2, updated_at_us = $3 where id = $1 returning {PAYMENT_COLUMNS}",
            payment.id,
            "capture" if kind is OpKind.CAPTURE else "cancel",
            at,
        )
        return _row(updated)

    async def create_refund(
        self, conn: Conn, client_id: str, payment_id: str, amount_minor: int | None
    ) -> dict[str, Any]:
        row = await self._payment_for_update(conn, client_id, payment_id)
        payment = state_of(row)
        available = payment.refundable_minor - row["refund_pending_minor"]
        amount = available if amount_minor is None else amount_minor
        if payment.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED):
            raise ApiError("payment_state_invalid", f"cannot refund a payment that is {payment.status.value}")
        if not 0 < amount <= available:
            raise ApiError("amount_invalid", f"refund amount must be within 1..{available}", "amount")
        at = now_us()
        refund_id = new_id("re")
        refund = await conn.fetchrow(
            "insert into refunds (id, payment_id, client_id, amount_minor, status, created_at_us)"
            " values ($1, $2, $3, $4, $5, $6) returning *",
            refund_id,
            payment.id,
            client_id,
            amount,
            RefundStatus.PENDING.value,
            at,
        )
        await conn.execute(
            "update payments set refund_pending_minor = refund_pending_minor + $2, updated_at_us = $3 where id = $1",
            payment.id,
            amount,
            at,
        )
        op = LedgerOp(refund_id, OpKind.REFUND, payment.id, amount, refund_id)
        await self._request(
            conn, op, payment, PaymentAccounts(row["source_account_id"], row["destination_account_id"]), at
        )
        return _row(refund)

    # --- reads ----------------------------------------------------------------------------------

    async def payment(self, client_id: str, payment_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            f"select {PAYMENT_COLUMNS} from payments where id = $1 and client_id = $2", payment_id, client_id
        )
        return dict(row) if row else None

    async def list_payments(self, client_id: str, limit: int, starting_after: str) -> tuple[list[dict[str, Any]], bool]:
        if starting_after:
            seq = await self.pool.fetchval(
                "select seq from payments where id = $1 and client_id = $2", starting_after, client_id
            )
            if seq is None:
                raise ApiError("resource_missing", f"no such payment: {starting_after!r}", "starting_after")
            rows = await self.pool.fetch(
                f"select {PAYMENT_COLUMNS} from payments where client_id = $1 and seq < $2 order by seq desc limit $3",
                client_id,
                seq,
                limit + 1,
            )
        else:
            rows = await self.pool.fetch(
                f"select {PAYMENT_COLUMNS} from payments where client_id = $1 order by seq desc limit $2",
                client_id,
                limit + 1,
            )
        return [dict(r) for r in rows[:limit]], len(rows) > limit

    async def account(self, client_id: str, account_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("select * from accounts where id = $1 and client_id = $2", account_id, client_id)
        return dict(row) if row else None

    # --- ledger outcomes ------------------------------------------------------------------------

    async def apply_outcomes(self, outcomes: Sequence[TransferOutcome]) -> list[StatusChange]:
        """Apply a batch of ledger outcomes in one transaction; returns the payments whose status changed."""
        changes: list[StatusChange] = []
        async with self.pool.acquire() as conn, conn.transaction():
            for outcome in outcomes:
                change = await self._apply_outcome(conn, outcome)
                if change is not None:
                    changes.append(change)
            if changes:
                await conn.execute(NOTIFY_SQL)
        return changes

    async def _apply_outcome(self, conn: Conn, outcome: TransferOutcome) -> StatusChange | None:
        op_row = await conn.fetchrow("select * from ledger_ops where transfer_id = $1 for update", outcome.transfer_id)
        if op_row is None:
            return None  # not a payment's transfer (or another rail's): none of our business
        row = _row(
            await conn.fetchrow(
                f"select {PAYMENT_COLUMNS} from payments where id = $1 for update", op_row["payment_id"]
            )
        )
        payment = state_of(row)
        op = LedgerOp(
            op_row["transfer_id"],
            OpKind(op_row["kind"]),
            op_row["payment_id"],
            op_row["amount_minor"],
            op_row["refund_id"],
        )
        at = now_us()
        if op_row["result"] is not None:
            if outcome.result != "expired" or op.kind is not OpKind.AUTHORIZE or op_row["result"] == "expired":
                return None  # a redelivered outcome: already applied
            resolution = expire_hold(payment)
        else:
            resolution = resolve(payment, op, outcome.result, row["review"])
        await conn.execute(
            "update ledger_ops set result = $2, resolved_at_us = $3 where transfer_id = $1",
            op.transfer_id,
            outcome.result,
            at,
        )
        return await self._store_resolution(conn, row, op, resolution, at)

    async def _store_resolution(
        self, conn: Conn, row: dict[str, Any], op: LedgerOp, resolution: Resolution, at: int
    ) -> StatusChange | None:
        refund_pending = row["refund_pending_minor"]
        if resolution.refund_status is not None:
            refund_pending -= op.amount_minor or 0
            await conn.execute(
                "update refunds set status = $2, failure_code = $3 where id = $1",
                op.refund_id,
                resolution.refund_status.value,
                resolution.failure_code,
            )
        new = resolution.payment
        updated = await conn.fetchrow(
            f"""update payments set status = $2, captured_minor = $3, refunded_minor = $4, refund_pending_minor = $5,
                    failure_code = case when $6 = '' then failure_code else $6 end,
                    pending_action = case when $7 then '' else pending_action end, updated_at_us = $8
                where id = $1 returning {PAYMENT_COLUMNS}""",
            new.id,
            new.status.value,
            new.captured_minor,
            new.refunded_minor,
            refund_pending,
            resolution.failure_code if resolution.refund_status is None else "",
            resolution.clear_pending_action,
            at,
        )
        if resolution.changed and new.status.value != row["status"]:
            await self._payment_event(conn, _row(updated))
            return StatusChange(new.id, row["status"], new.status.value, row["created_at_us"], at)
        return None


def replay_or_refuse(stored: StoredResponse, fingerprint: str) -> bytes:
    if stored.fingerprint != fingerprint:
        raise ApiError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
    return stored.response
