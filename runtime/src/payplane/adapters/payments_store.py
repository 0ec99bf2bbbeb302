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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from payplane.adapters.postgres_sessions import KEY_LOOKUP_SESSION
from payplane.payments.errors import ApiError
from payplane.payments.fraud import Evaluation, Verdict
from payplane.payments.ledger_ops import (
    REVIEW_APPROVE,
    REVIEW_REJECT,
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
from payplane.platform import random_ids
from payplane.platform.group_commit import GroupCommit
from payplane.platform.tracing import trace_id_of
from payplane_contracts.ledger_messages import TransferOutcome
from payplane_contracts.topics import RailTopics

Conn = asyncpg.Connection | PoolConnectionProxy
MIGRATIONS_PACKAGE: Final = "payplane.payments.migrations"
NOTIFY_CHANNEL: Final = "payplane_outbox"
NOTIFY_SQL: Final = f"select pg_notify('{NOTIFY_CHANNEL}', '')"
CLEANUP_BATCH_MAX: Final = 2_000  # rows per cleanup statement: a few ms of the database each
ACCOUNT_CACHE_MAX: Final = 100_000  # immutable account rows kept per process (cleared when full)

PAYMENT_COLUMNS: Final = (
    "id, client_id, amount_minor, currency, source_account_id, destination_account_id, capture_method, status,"
    " captured_minor, refunded_minor, refund_pending_minor, review, failure_code, description, pending_action,"
    " created_at_us, updated_at_us, trace_id"
)


# One statement, one round trip for a whole batch of new payments (group commit, see PaymentsStore.
# create_payment): the idempotency claims (with the responses to replay) and, only for the keys claimed,
# the payments, their ledger operations and their outbox rows; NOTIFY wakes the relay at commit. A batch
# holds each (client, key) at most once (ON CONFLICT may touch a row only once per statement).
CREATE_PAYMENTS_SQL: Final = f"""
with input as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::bigint[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::boolean[], $13::text[],
                         $14::text[], $15::text[], $16::bigint[], $17::text[], $18::text[], $19::bigint[],
                         $20::text[], $21::integer[], $22::bytea[], $23::bytea[], $24::text[], $25::text[],
                         $26::float8[])
      as t(client_id, key, fingerprint, response, id, amount_minor, currency, source_account_id,
           destination_account_id, capture_method, status, review, fraud_rule, failure_code, description, at_us,
           transfer_id, op_kind, op_amount_minor, topic, kafka_partition, message_key, payload, traceparent,
           trace_id, retention_s)
), claim as (
    insert into idempotency_keys (client_id, key, fingerprint, response, expires_at)
    select client_id, key, fingerprint, response, now() + make_interval(secs => retention_s) from input
    on conflict (client_id, key) do update
      set fingerprint = excluded.fingerprint, response = excluded.response, created_at = now(),
          expires_at = excluded.expires_at
      where idempotency_keys.expires_at <= now()
    returning client_id, key
), claimed as (
    select input.* from input join claim using (client_id, key)
), payment as (
    insert into payments (id, client_id, amount_minor, currency, source_account_id, destination_account_id,
                          capture_method, status, review, fraud_rule, failure_code, description,
                          created_at_us, updated_at_us, trace_id)
    select id, client_id, amount_minor, currency, source_account_id, destination_account_id, capture_method,
           status, review, fraud_rule, failure_code, description, at_us, at_us, trace_id from claimed
), op as (
    insert into ledger_ops (transfer_id, payment_id, kind, amount_minor, refund_id, requested_at_us)
    select transfer_id, id, op_kind, op_amount_minor, '', at_us from claimed where transfer_id is not null
), event as (
    insert into outbox (topic, kafka_partition, message_key, payload, traceparent)
    select topic, kafka_partition, message_key, payload, traceparent from claimed
    returning 1
)
select array(select id from claimed), (select pg_notify('{NOTIFY_CHANNEL}', '') from event limit 1)
"""
# The writes of one batch of ledger outcomes (PaymentsStore.apply_outcomes), one round trip.
WRITE_OUTCOMES_SQL: Final = f"""
with ops as (
    update ledger_ops o set result = u.result, resolved_at_us = u.at
    from unnest($1::text[], $2::text[], $3::bigint[]) as u(id, result, at)
    where o.transfer_id = u.id
), refunds as (
    update refunds r set status = u.status, failure_code = u.failure_code
    from unnest($4::text[], $5::text[], $6::text[]) as u(id, status, failure_code)
    where r.id = u.id
), payments as (
    update payments p set status = u.status, captured_minor = u.captured, refunded_minor = u.refunded,
        refund_pending_minor = u.refund_pending, failure_code = u.failure_code,
        pending_action = u.pending_action, updated_at_us = u.at
    from unnest($7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[],
                $14::bigint[]) as u(id, status, captured, refunded, refund_pending, failure_code, pending_action, at)
    where p.id = u.id
), events as (
    insert into outbox (topic, kafka_partition, message_key, payload)
    select u.topic, null, u.message_key, u.payload
    from unnest($15::text[], $16::bytea[], $17::bytea[]) as u(topic, message_key, payload)
    returning 1
)
select (select pg_notify('{NOTIFY_CHANNEL}', '') from events limit 1)
"""
STORED_RESPONSES_SQL: Final = """
select k.client_id, k.key, k.fingerprint, k.response
from idempotency_keys k join unnest($1::text[], $2::text[]) as wanted(client_id, key) using (client_id, key)
where k.expires_at > now()
"""
CREATE_BATCH_MAX: Final = 256  # payments per statement
CREATE_BATCHES_IN_FLIGHT: Final = 1  # statements running at once; more callers wait and join the next batch


def _row(record: asyncpg.Record | None) -> dict[str, Any]:
    if record is None:
        raise LookupError("a row this transaction just wrote or locked is missing")
    return dict(record)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    pass


def now_us() -> int:
    return time.time_ns() // 1000


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_ids.token_hex(12)}"


@dataclass(frozen=True)
class StatusChange:
    """A payment moved to another status because of a ledger outcome (reported to metrics)."""

    payment_id: str
    old_status: str
    new_status: str
    created_at_us: int
    changed_at_us: int
    trace_id: str = ""  # of the request that created the payment


@dataclass(frozen=True)
class IdempotencyClaim:
    client_id: str
    key: str
    fingerprint: str
    retention_s: float


@dataclass(frozen=True)
class NewPayment:
    """A validated payment ready to be written, with the response its key will replay."""

    claim: IdempotencyClaim
    response: bytes
    row: dict[str, Any]  # the payments row
    fraud_rule: str
    op: LedgerOp | None  # the ledger operation it starts (none if it was declined)
    outbox: tuple[str, int | None, bytes, bytes]  # topic, Kafka partition, key, payload
    traceparent: str | None


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
    def __init__(
        self,
        pool: asyncpg.Pool,
        topics: RailTopics,
        partitions: int,
        observe_create_batch: Callable[[int], None] | None = None,
        create_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool
        self.create_pool = create_pool or pool  # the group commit's creates (see open)
        self.topics = topics
        self.partitions = partitions
        self._accounts: dict[str, dict[str, Any]] = {}
        self._creates: GroupCommit[NewPayment, tuple[bytes, bool]] = GroupCommit(
            self._create_payments,
            max_items=CREATE_BATCH_MAX,
            max_in_flight=CREATE_BATCHES_IN_FLIGHT,
            observe_batch=observe_create_batch,
        )

    @classmethod
    async def open(
        cls,
        dsn: str,
        topics: RailTopics,
        partitions: int,
        pool_size: int = 10,
        observe_create_batch: Callable[[int], None] | None = None,
    ) -> "PaymentsStore":
        # reset=_keep_session: a released connection is still rolled back if needed, but skips the reset
        # query (a round trip per request): this store sets no session state, LISTENs on no pooled connection;
        # its outcome reads are key lookups in fast-growing tables (postgres_sessions)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=10,
            reset=_keep_session,
            server_settings=KEY_LOOKUP_SESSION,
        )
        # The creates' statement looks nothing up in a table (it inserts, and ON CONFLICT probes a unique
        # index whatever the plan): its cached generic plan is right at any size, and planning it anew
        # for every batch (as KEY_LOOKUP_SESSION would) costs 0.3-0.45 ms of a ~1 ms statement.
        try:
            create_pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=CREATE_BATCHES_IN_FLIGHT + 1, timeout=10, reset=_keep_session
            )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, topics, partitions, observe_create_batch, create_pool)

    async def close(self) -> None:
        await self.pool.close()
        if self.create_pool is not self.pool:
            await self.create_pool.close()

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
        await conn.execute(
            "insert into outbox (topic, kafka_partition, message_key, payload) values ($1, null, $2, $3)",
            *payment_event(row, self.topics.payment_events),
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

    async def _account(self, client_id: str, account_id: str, param: str) -> dict[str, Any]:
        """An account of this client; rows never change once written, so each is read once per process."""
        row = self._accounts.get(account_id)
        if row is None:
            record = await self.pool.fetchrow("select * from accounts where id = $1", account_id)
            if record is not None:
                if len(self._accounts) >= ACCOUNT_CACHE_MAX:
                    self._accounts.clear()
                row = self._accounts[account_id] = dict(record)
        if row is None or row["client_id"] != client_id:
            raise ApiError("resource_missing", f"no such account: {account_id!r}", param)
        return row

    async def create_payment(
        self,
        claim: IdempotencyClaim,
        fields: dict[str, Any],
        evaluation: Evaluation,
        render: Callable[[dict[str, Any]], bytes],
        traceparent: str = "",
    ) -> tuple[bytes, bool]:
        """Create a payment once per idempotency key: the key's claim with its response, the payment, its
        ledger operation and its outbox row, written by one statement together with the payments of
        every concurrent caller (group commit). Returns (response, replayed). Validation happens before
        anything is written, so a refused request records nothing."""
        new = await self._new_payment(claim, fields, evaluation, render, traceparent)
        return await self._creates.submit(new)

    async def _new_payment(
        self,
        claim: IdempotencyClaim,
        fields: dict[str, Any],
        evaluation: Evaluation,
        render: Callable[[dict[str, Any]], bytes],
        traceparent: str,
    ) -> NewPayment:
        client_id = claim.client_id
        source = await self._account(client_id, fields["source_account_id"], "source")
        destination = await self._account(client_id, fields["destination_account_id"], "destination")
        if source["id"] == destination["id"]:
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
        row: dict[str, Any] = {
            "id": payment.id,
            "client_id": client_id,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "source_account_id": source["id"],
            "destination_account_id": destination["id"],
            "capture_method": payment.capture_method.value,
            "status": payment.status.value,
            "captured_minor": 0,
            "refunded_minor": 0,
            "refund_pending_minor": 0,
            "review": review,
            "failure_code": failure,
            "description": fields.get("description", ""),
            "pending_action": "",
            "created_at_us": at,
            "updated_at_us": at,
            "trace_id": trace_id_of(traceparent),
        }
        op: LedgerOp | None = None
        outbox: tuple[str, int | None, bytes, bytes]
        if payment.status is PaymentStatus.PROCESSING:
            op = initial_op(payment, needs_hold(payment.capture_method, review))
            request, debit_account = op_request(op, payment, PaymentAccounts(source["id"], destination["id"]))
            command = transfer_command(request, debit_account, self.partitions)
            outbox = (self.topics.ledger_commands, command.kafka_partition, command.key, command.payload)
        else:
            topic, key, payload = payment_event(row, self.topics.payment_events)
            outbox = (topic, None, key, payload)
        return NewPayment(
            claim=claim,
            response=render(row),
            row=row,
            fraud_rule=evaluation.rule,
            op=op,
            outbox=outbox,
            traceparent=traceparent or None,
        )

    async def _create_payments(self, batch: Sequence[NewPayment]) -> list[tuple[bytes, bool] | BaseException]:
        """One group-commit batch. A key that appears twice in the batch is written once; its other
        requests are answered like any duplicate, from the stored response (replay, or 422 for another
        body). If the statement fails for a reason that is not an outage (one bad row), each payment is
        retried alone so only the one at fault fails."""
        first: dict[tuple[str, str], NewPayment] = {}
        for new in batch:
            first.setdefault((new.claim.client_id, new.claim.key), new)  # the others are duplicates
        try:
            created = await self._insert_payments(list(first.values()))
        except asyncpg.PostgresError as exc:
            if is_transient(exc) or len(first) == 1:
                raise
            return [await self._create_alone(new) for new in batch]
        duplicates = [new for new in batch if new.row["id"] not in created]
        stored = await self._stored_responses([new.claim for new in duplicates]) if duplicates else {}
        return [
            (new.response, False)
            if new.row["id"] in created
            else _replay(stored.get((new.claim.client_id, new.claim.key)), new.claim.fingerprint)
            for new in batch
        ]

    async def _create_alone(self, new: NewPayment) -> tuple[bytes, bool] | BaseException:
        try:
            return (await self._create_payments([new]))[0]
        except asyncpg.PostgresError as exc:
            return exc

    async def _insert_payments(self, batch: Sequence[NewPayment]) -> set[str]:
        """Write the batch in one statement; returns the ids of the payments whose key was claimed."""
        columns: list[list[Any]] = [[] for _ in range(26)]
        for new in batch:
            row, op = new.row, new.op
            values = (
                new.claim.client_id,
                new.claim.key,
                new.claim.fingerprint,
                new.response,
                row["id"],
                row["amount_minor"],
                row["currency"],
                row["source_account_id"],
                row["destination_account_id"],
                row["capture_method"],
                row["status"],
                row["review"],
                new.fraud_rule,
                row["failure_code"],
                row["description"],
                row["created_at_us"],
                op.transfer_id if op else None,
                op.kind.value if op else "",
                op.amount_minor if op else None,
                *new.outbox,
                new.traceparent,
                row["trace_id"],
                float(new.claim.retention_s),
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        record = await self.create_pool.fetchrow(CREATE_PAYMENTS_SQL, *columns)
        assert record is not None
        return set(record[0])

    async def _stored_responses(self, claims: Sequence[IdempotencyClaim]) -> dict[tuple[str, str], StoredResponse]:
        rows = await self.pool.fetch(STORED_RESPONSES_SQL, [c.client_id for c in claims], [c.key for c in claims])
        return {(r["client_id"], r["key"]): StoredResponse(r["fingerprint"], bytes(r["response"])) for r in rows}

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

    async def review_decision(self, conn: Conn, payment_id: str, approve: bool) -> dict[str, Any]:
        """An admin's decision on a payment in review (any client's). Approving a manual-capture payment
        makes it ``authorized`` at once (its hold stays); approving an automatic one posts the hold;
        rejecting voids it. The outcome arrives from the ledger like any other."""
        row = await conn.fetchrow(f"select {PAYMENT_COLUMNS} from payments where id = $1 for update", payment_id)
        if row is None:
            raise ApiError("resource_missing", f"no such payment: {payment_id!r}", "id")
        if row["pending_action"]:
            raise ApiError("payment_action_pending", f"a {row['pending_action']} of this payment is in progress")
        payment = state_of(row)
        try:
            decided = apply(payment, Event(EventKind.APPROVE if approve else EventKind.REJECT))
        except IllegalTransitionError as exc:
            raise ApiError("payment_state_invalid", str(exc)) from None
        at = now_us()
        if decided.status is PaymentStatus.AUTHORIZED:  # manual capture: the client captures later
            updated = _row(
                await conn.fetchrow(
                    f"update payments set status = $2, updated_at_us = $3 where id = $1 returning {PAYMENT_COLUMNS}",
                    payment.id,
                    decided.status.value,
                    at,
                )
            )
            await self._payment_event(conn, updated)
            return updated
        kind, action = (OpKind.CAPTURE, REVIEW_APPROVE) if approve else (OpKind.VOID, REVIEW_REJECT)
        suffix = "capture" if approve else "void"
        op = LedgerOp(f"{payment.id}.{suffix}", kind, payment.id, None)
        accounts = PaymentAccounts(row["source_account_id"], row["destination_account_id"])
        await self._request(conn, op, payment, accounts, at)
        requested = await conn.fetchrow(
            f"update payments set pending_action = $2, updated_at_us = $3 where id = $1 returning {PAYMENT_COLUMNS}",
            payment.id,
            action,
            at,
        )
        return _row(requested)

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

    async def list_reviews(self, limit: int, starting_after: str) -> tuple[list[dict[str, Any]], bool]:
        """Every client's payments waiting for a review decision, oldest first."""
        after_seq = 0
        if starting_after:
            found = await self.pool.fetchval("select seq from payments where id = $1", starting_after)
            if found is None:
                raise ApiError("resource_missing", f"no such payment: {starting_after!r}", "starting_after")
            after_seq = found
        rows = await self.pool.fetch(
            f"select {PAYMENT_COLUMNS} from payments where status = 'requires_review' and seq > $1"
            " order by seq limit $2",
            after_seq,
            limit + 1,
        )
        return [dict(r) for r in rows[:limit]], len(rows) > limit

    async def account(self, client_id: str, account_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("select * from accounts where id = $1 and client_id = $2", account_id, client_id)
        return dict(row) if row else None

    # --- ledger outcomes ------------------------------------------------------------------------

    async def apply_outcomes(self, outcomes: Sequence[TransferOutcome]) -> list[StatusChange]:
        """Apply a batch of ledger outcomes in one transaction, set-based: the batch's operations and
        payments are locked and read in two statements (in id order), resolved in memory in arrival
        order, and written back in one statement per table. Returns the payments whose status changed.

        Each operation is resolved by its first outcome; a redelivered outcome (in this batch or a later
        one) changes nothing, except ``expired`` for a hold that is still open."""
        if not outcomes:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            op_rows = await conn.fetch(
                "select * from ledger_ops where transfer_id = any($1::text[]) order by transfer_id for update",
                sorted({o.transfer_id for o in outcomes}),
            )
            if not op_rows:
                return []  # none of them is a payment's transfer (or they are another rail's)
            payment_rows = await conn.fetch(
                f"select {PAYMENT_COLUMNS} from payments where id = any($1::text[]) order by id for update",
                sorted({r["payment_id"] for r in op_rows}),
            )
            batch = _OutcomeBatch(
                {r["transfer_id"]: dict(r) for r in op_rows}, {r["id"]: dict(r) for r in payment_rows}
            )
            for outcome in outcomes:
                batch.apply(outcome, now_us(), self.topics.payment_events)
            await self._write_outcome_batch(conn, batch)
        return batch.changes

    async def _write_outcome_batch(self, conn: Conn, batch: "_OutcomeBatch") -> None:
        """Everything the batch changed, in one statement (one round trip): operations, refunds and
        payments updated from arrays, payment events inserted into the outbox, NOTIFY if there are any."""
        if not (batch.dirty_ops or batch.refunds or batch.dirty_payments or batch.events):
            return
        ops = [batch.ops[t] for t in sorted(batch.dirty_ops)]
        refund_ids = sorted(batch.refunds)
        payments = [batch.payments[p] for p in sorted(batch.dirty_payments)]
        await conn.execute(
            WRITE_OUTCOMES_SQL,
            [r["transfer_id"] for r in ops],
            [r["result"] for r in ops],
            [r["resolved_at_us"] for r in ops],
            refund_ids,
            [batch.refunds[i][0] for i in refund_ids],
            [batch.refunds[i][1] for i in refund_ids],
            [r["id"] for r in payments],
            [r["status"] for r in payments],
            [r["captured_minor"] for r in payments],
            [r["refunded_minor"] for r in payments],
            [r["refund_pending_minor"] for r in payments],
            [r["failure_code"] for r in payments],
            [r["pending_action"] for r in payments],
            [r["updated_at_us"] for r in payments],
            [e[0] for e in batch.events],
            [e[1] for e in batch.events],
            [e[2] for e in batch.events],
        )


def payment_event(row: dict[str, Any], topic: str) -> tuple[str, bytes, bytes]:
    """The outbox row (topic, key, payload) announcing that a payment reached its current status."""
    event = {"v": 1, "id": new_id("evt"), "type": f"payment.{row['status']}", "payment_id": row["id"]}
    event |= {"client_id": row["client_id"], "status": row["status"], "at_us": row["updated_at_us"]}
    return topic, row["id"].encode(), json.dumps(event, separators=(",", ":")).encode()


@dataclass
class _OutcomeBatch:
    """One batch of outcomes resolved in memory over the rows it locked, in arrival order (pure)."""

    ops: dict[str, dict[str, Any]]  # ledger_ops rows by transfer id
    payments: dict[str, dict[str, Any]]  # payment rows by id
    dirty_ops: set[str] = field(default_factory=set)
    dirty_payments: set[str] = field(default_factory=set)
    refunds: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (status, failure code)
    events: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)

    def apply(self, outcome: TransferOutcome, at: int, events_topic: str) -> None:
        op_row = self.ops.get(outcome.transfer_id)
        if op_row is None:
            return  # not a payment's transfer (or another rail's): none of our business
        row = self.payments[op_row["payment_id"]]
        payment = state_of(row)
        op = LedgerOp(
            op_row["transfer_id"],
            OpKind(op_row["kind"]),
            op_row["payment_id"],
            op_row["amount_minor"],
            op_row["refund_id"],
        )
        if op_row["result"] is not None:
            if outcome.result != "expired" or op.kind is not OpKind.AUTHORIZE or op_row["result"] == "expired":
                return  # a redelivered outcome: already applied
            resolution = expire_hold(payment)
        else:
            resolution = resolve(payment, op, outcome.result, row["review"], row["pending_action"])
        op_row["result"], op_row["resolved_at_us"] = outcome.result, at
        self.dirty_ops.add(op.transfer_id)
        self._store(row, op, resolution, at, events_topic)

    def _store(self, row: dict[str, Any], op: LedgerOp, resolution: Resolution, at: int, events_topic: str) -> None:
        old_status = row["status"]
        if resolution.refund_status is not None:
            row["refund_pending_minor"] -= op.amount_minor or 0
            self.refunds[op.refund_id] = (resolution.refund_status.value, resolution.failure_code)
        new = resolution.payment
        failure_code = resolution.failure_code if resolution.refund_status is None else ""
        row["status"] = new.status.value
        row["captured_minor"] = new.captured_minor
        row["refunded_minor"] = new.refunded_minor
        row["failure_code"] = failure_code or row["failure_code"]
        row["pending_action"] = "" if resolution.clear_pending_action else row["pending_action"]
        row["updated_at_us"] = at
        self.dirty_payments.add(new.id)
        if resolution.changed and new.status.value != old_status:
            self.events.append(payment_event(row, events_topic))
            change = StatusChange(new.id, old_status, new.status.value, row["created_at_us"], at, row["trace_id"])
            self.changes.append(change)


# SQLSTATE classes a retry can cure: connection exceptions, transaction rollbacks (serialization failure,
# deadlock), insufficient resources (too many connections), operator intervention (a restart or shutdown
# terminating the session, "the database system is starting up", a cancelled statement).
TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"08", "40", "53", "57"})


def is_transient(exc: asyncpg.PostgresError) -> bool:
    """Whether a PostgreSQL error means "unavailable, retry" rather than a bug."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


def _replay(stored: StoredResponse | None, fingerprint: str) -> tuple[bytes, bool] | ApiError:
    """The answer to a request whose key was already claimed: the stored response, or the refusal."""
    if stored is None:  # expired since it was claimed: extremely unlikely, safe to ask for a retry
        return ApiError("idempotency_key_in_use", "the request with this Idempotency-Key is being processed")
    try:
        return replay_or_refuse(stored, fingerprint), True
    except ApiError as exc:
        return exc


def replay_or_refuse(stored: StoredResponse, fingerprint: str) -> bytes:
    if stored.fingerprint != fingerprint:
        raise ApiError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
    return stored.response
