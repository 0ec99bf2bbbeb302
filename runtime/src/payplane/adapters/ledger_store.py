"""The ledger shard's PostgreSQL store: load what a batch touches, persist what it changed.

Set-based: a batch is loaded by three queries and persisted by a handful of statements over arrays
(``unnest``), in one transaction that also checks the writer's epoch (fencing) and records the
consumed Kafka offsets. Account rows are locked in id order before they are written, so concurrent
batches can never deadlock.
"""

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg

from payplane.adapters.outbox_relay import NOTIFY_CHANNEL
from payplane.faults import crash_point
from payplane.ledger.codec import decode_stored_request, encode_request
from payplane.ledger.engine import Ledger
from payplane.ledger.model import (
    Account,
    AccountFlags,
    AccountSpec,
    AccountStatus,
    BalanceChange,
    PendingState,
    Transfer,
)
from payplane.ledger.results import TransferResult
from payplane.ledger.writer import DuplicateIdError

MIGRATIONS_PACKAGE = "payplane.ledger.migrations"


class FencedError(Exception):
    """Another writer took over the partition (its epoch is newer): this writer must let it go."""

    def __init__(self, partition: int, my_epoch: int, current_epoch: int | None) -> None:
        self.partition = partition
        super().__init__(
            f"partition {partition}: writer epoch {my_epoch} is stale (current {current_epoch}); not committing"
        )


class OutboxMessage(NamedTuple):
    topic: str
    kafka_partition: int | None  # None: Kafka's key hashing decides
    key: bytes | None
    payload: bytes
    packed: bool = False  # the payload packs several messages (``outbox_relay.pack_messages``)


@dataclass
class BatchOutcome:
    """Everything one batch changed, gathered for a single persisting transaction."""

    partition: int
    epoch: int
    now_us: int
    new_accounts: list[Account] = field(default_factory=list)
    changes: list[BalanceChange] = field(default_factory=list)  # every change, refusals included
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, kafka partition) -> next
    outbox: list[OutboxMessage] = field(default_factory=list)
    ids_assumed_new: bool = False  # decided without looking its transfer ids up (see ``write_rows``)


# -- loading -------------------------------------------------------------------------------------
async def load_ledger(
    conn: asyncpg.Connection,
    account_ids: Iterable[str],
    transfer_ids: Iterable[str],
    refusal_ids: Iterable[str] | None = None,
) -> Ledger:
    """A Ledger holding exactly the accounts, transfers and refusals a batch may consult: the transfers
    among ``transfer_ids`` and the refusals among ``refusal_ids`` (the same ids when not given).

    Transfers load first, so the accounts of the pending transfers a batch posts or voids load too.
    """
    ledger = Ledger()
    ids = sorted(set(transfer_ids))
    refused_ids = ids if refusal_ids is None else sorted(set(refusal_ids))
    if ids or refused_ids:
        for row in await conn.fetch(_LOAD_TRANSFERS_AND_REJECTIONS, ids, refused_ids):
            if row["result"] is None:
                ledger.transfers[row["id"]] = _transfer_from_row(row)
            else:
                ledger.rejections[row["id"]] = (decode_stored_request(row["request"]), TransferResult(row["result"]))
    wanted = set(account_ids)
    wanted.update(a for t in ledger.transfers.values() for a in (t.debit_account_id, t.credit_account_id))
    if wanted:
        for row in await conn.fetch("select * from accounts where id = any($1::text[])", sorted(wanted)):
            ledger.accounts[row["id"]] = _account_from_row(row)
    return ledger


# One round trip for both: applied transfers (result is null) and remembered refusals.
_LOAD_TRANSFERS_AND_REJECTIONS = """
    select id, debit_account_id, credit_account_id, amount_minor, currency, applied_at_us, expires_at_us,
           pending_state, request, null::text as result
    from transfers where id = any($1::text[])
    union all
    select id, null, null, null, null, null, null, null, request, result
    from rejections where id = any($2::text[])"""


def _account_from_row(row: asyncpg.Record) -> Account:
    spec = AccountSpec(
        id=row["id"],
        currency=row["currency"],
        owner=row["owner"],
        flags=AccountFlags(
            debits_must_not_exceed_credits=row["debits_must_not_exceed_credits"],
            credits_must_not_exceed_debits=row["credits_must_not_exceed_debits"],
            internal=row["internal"],
        ),
        overdraft_limit_minor=row["overdraft_limit_minor"],
    )
    return Account(
        spec=spec,
        status=AccountStatus(row["status"]),
        debits_pending_minor=row["debits_pending_minor"],
        debits_posted_minor=row["debits_posted_minor"],
        credits_pending_minor=row["credits_pending_minor"],
        credits_posted_minor=row["credits_posted_minor"],
        created_at_us=row["created_at_us"],
    )


def _transfer_from_row(row: asyncpg.Record) -> Transfer:
    state = row["pending_state"]
    return Transfer(
        request=decode_stored_request(row["request"]),
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        applied_at_us=row["applied_at_us"],
        expires_at_us=row["expires_at_us"],
        pending_state=PendingState(state) if state else None,
    )


# -- persisting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRows:
    """One batch as the rows it writes, copied out of the in-memory ledger when the batch was decided.
    A batch may span several partitions of one writer: every row carries its partition, and the
    transaction checks the writer's epoch on each of them.

    The copy is what makes pipelining safe: the writer goes on deciding the next batch, mutating the
    same cached account (and pending transfer) objects, while these rows commit."""

    epochs: list[tuple[int, int]]  # (partition, the writer's epoch on it), by partition
    accounts: list[tuple[object, ...]]
    balances: list[tuple[str, int, int, int, int]]
    transfers: list[tuple[object, ...]]
    pending_states: list[tuple[str, str | None]]
    rejections: list[tuple[str, int, str, str]]
    outbox: list[tuple[object, ...]]
    offsets: list[tuple[str, int, int]]
    now_us: int
    ids_assumed_new: bool = False

    @property
    def partitions(self) -> list[int]:
        return [partition for partition, _ in self.epochs]


def prepare_rows(parts: Sequence[BatchOutcome], ledger: Ledger) -> BatchRows:
    """The rows of one batch, made of one part per partition (pure; no I/O). Every account and transfer a
    part writes lives on the part's partition: a writer never touches a partition it does not own
    (misrouted commands are dead-lettered, cross-partition transfers move through transit accounts)."""
    if not parts:
        raise ValueError("a batch has at least one partition's part")
    # every balance a batch moved belongs to one of the accounts of a transfer it created or resolved;
    # one row per account, read once every part is decided (an account two parts moved is written once)
    touched = sorted(
        {
            a
            for part in parts
            for c in part.changes
            for t in _transfers_of(c)
            for a in (t.debit_account_id, t.credit_account_id)
        }
    )
    accounts = ledger.accounts
    offsets: dict[tuple[str, int], int] = {}
    for part in parts:
        offsets.update(part.offsets)
    return BatchRows(
        epochs=sorted({part.partition: part.epoch for part in parts}.items()),
        accounts=[_account_record(a, part.partition) for part in parts for a in part.new_accounts],
        balances=[
            (a_id, a.debits_pending_minor, a.debits_posted_minor, a.credits_pending_minor, a.credits_posted_minor)
            for a_id, a in ((a_id, accounts[a_id]) for a_id in touched)
        ],
        transfers=[
            _transfer_record(c.transfer, part.partition)
            for part in parts
            for c in part.changes
            if c.transfer is not None
        ],
        pending_states=[
            (t.id, t.pending_state.value if t.pending_state else None)
            for part in parts
            for t in (c.pending_resolved for c in part.changes)
            if t is not None
        ],
        rejections=[
            (r.id, part.partition, result.value, encode_request(r).decode())
            for part in parts
            for r, result in (c.rejection for c in part.changes if c.rejection is not None)
        ],
        outbox=[
            (part.partition, m.topic, m.kafka_partition, m.key, m.payload, m.packed)
            for part in parts
            for m in part.outbox
        ],
        offsets=[(topic, kafka_partition, offset) for (topic, kafka_partition), offset in sorted(offsets.items())],
        now_us=max(part.now_us for part in parts),
        ids_assumed_new=any(part.ids_assumed_new for part in parts),
    )


async def persist(conn: asyncpg.Connection, outcome: BatchOutcome, ledger: Ledger) -> None:
    """Write one batch in one transaction, or nothing at all (and raise) if this writer is fenced."""
    await write_rows(conn, prepare_rows([outcome], ledger))


_HAS_BALANCE_WRITES: "weakref.WeakSet[asyncpg.Connection]" = weakref.WeakSet()  # sessions with the table


async def write_rows(conn: asyncpg.Connection, rows: BatchRows) -> None:
    """One transaction: the epoch check (fencing), then every row of the batch, then its offsets."""
    if conn not in _HAS_BALANCE_WRITES:
        # once per session and outside the batch's transaction, so a rolled-back batch cannot undo it
        await conn.execute(_BALANCE_WRITES_TABLE)
        _HAS_BALANCE_WRITES.add(conn)
    try:
        await _write_in_transaction(conn, rows)
    except asyncpg.UniqueViolationError as exc:
        if not rows.ids_assumed_new:
            raise
        raise DuplicateIdError(f"partitions {rows.partitions}: {exc.detail or exc}") from exc


async def _write_in_transaction(conn: asyncpg.Connection, rows: BatchRows) -> None:
    async with conn.transaction():
        await _check_epoch(conn, rows)
        if rows.accounts:
            await conn.copy_records_to_table("accounts", records=rows.accounts, columns=_ACCOUNT_COLUMNS)
        balances_copied = len(rows.balances) > BALANCES_BY_ARRAYS_MAX
        if balances_copied:
            await conn.copy_records_to_table("balance_writes", records=rows.balances)
        if rows.transfers:
            await conn.copy_records_to_table("transfers", records=rows.transfers, columns=_TRANSFER_COLUMNS)
        await _finish_batch(conn, rows, balances_copied=balances_copied)
        crash_point("ledger.before_commit")


def _transfers_of(change: BalanceChange) -> list[Transfer]:
    return [t for t in (change.transfer, change.pending_resolved) if t is not None]


async def _check_epoch(conn: asyncpg.Connection, rows: BatchRows) -> None:
    """The epoch check on every partition of the batch (fencing), and in the same round trip, for a batch
    that assumed its transfer ids new, whether an id it refused was applied before. The other ways such a
    batch can be wrong break a primary key instead (an id applied before and applied again; refusals are
    loaded with the batch, so an id is never refused twice)."""
    refused_ids = [r[0] for r in rows.rejections] if rows.ids_assumed_new else []
    found = await conn.fetch(
        """select partition, writer_epoch, exists(select 1 from transfers where id = any($2::text[])) as seen
           from ledger_partitions where partition = any($1::int[]) order by partition for share""",
        rows.partitions,
        refused_ids,
    )
    current_epochs = {row["partition"]: row["writer_epoch"] for row in found}
    for partition, epoch in rows.epochs:
        if current_epochs.get(partition) != epoch:
            raise FencedError(partition, epoch, current_epochs.get(partition))
    if found and found[0]["seen"]:
        raise DuplicateIdError(f"partitions {rows.partitions}: an id the batch refused was applied before")


_ACCOUNT_COLUMNS = (
    "id", "partition", "currency", "owner", "status", "debits_must_not_exceed_credits",
    "credits_must_not_exceed_debits", "internal", "overdraft_limit_minor", "created_at_us",
)  # fmt: skip


def _account_record(a: Account, partition: int) -> tuple[object, ...]:
    flags = a.spec.flags
    return (
        a.id,
        partition,
        a.currency,
        a.spec.owner,
        a.status.value,
        flags.debits_must_not_exceed_credits,
        flags.credits_must_not_exceed_debits,
        flags.internal,
        a.spec.overdraft_limit_minor,
        a.created_at_us,
    )


_BALANCE_WRITES_TABLE = """create temp table if not exists balance_writes (
    id text, debits_pending_minor bigint, debits_posted_minor bigint,
    credits_pending_minor bigint, credits_posted_minor bigint
) on commit delete rows"""


_TRANSFER_COLUMNS = (
    "id", "partition", "mode", "kind", "debit_account_id", "credit_account_id", "amount_minor", "currency",
    "pending_id", "timeout_s", "expires_at_us", "pending_state", "request", "payment_ref", "applied_at_us",
)  # fmt: skip


def _transfer_record(t: Transfer, partition: int) -> tuple[object, ...]:
    request = t.request
    return (
        request.id,
        partition,
        request.mode,  # a StrEnum is its value (and a str to asyncpg)
        request.kind,
        t.debit_account_id,
        t.credit_account_id,
        t.amount_minor,
        t.currency,
        request.pending_id or None,
        request.timeout_s,
        t.expires_at_us,
        t.pending_state,
        encode_request(request).decode(),
        request.payment_ref,
        t.applied_at_us,
    )


# Everything after the bulk rows, in ONE statement (data-modifying CTEs): each round trip costs the batch
# in flight the time the writer's event loop takes to get back to it while deciding the next batch.
# Balances come from the session's scratch table (a large batch's, by binary COPY: array parameters cost
# the client far more per value) or from array parameters $1-$5 (a small batch's: the scratch table's COPY
# and its truncation at commit cost about a millisecond, which only a large batch amortises); the
# ``balance_arrays`` CTE only types $1-$5 for the statement that does not read them.
_FINISH_BATCH = """
with balance_arrays as (select $1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]),
balances as (
    update accounts a set debits_pending_minor = v.dpe, debits_posted_minor = v.dpo,
                          credits_pending_minor = v.cpe, credits_posted_minor = v.cpo
    from {balances} as v(id, dpe, dpo, cpe, cpo)
    where a.id = v.id),
pending as (
    update transfers t set pending_state = v.state
    from unnest($6::text[], $7::text[]) as v(id, state) where t.id = v.id),
refused as (
    insert into rejections (id, partition, result, request, rejected_at_us)
    select v.id, v.partition, v.result, v.request, $8
    from unnest($9::text[], $10::int[], $11::text[], $12::text[]) as v(id, partition, result, request)),
published as (
    insert into outbox (partition, topic, kafka_partition, message_key, payload, packed)
    select * from unnest($13::int[], $14::text[], $15::int[], $16::bytea[], $17::bytea[], $18::bool[])),
consumed as (
    insert into consumed_offsets (topic, kafka_partition, next_offset)
    select * from unnest($19::text[], $20::int[], $21::bigint[])
    on conflict (topic, kafka_partition) do update set next_offset = excluded.next_offset)
select case when cardinality($14::text[]) > 0 then pg_notify($22::text, '') end"""
# Two statements, not one reading both sources: the planner cannot know the scratch table is empty in a
# small batch (a never-analysed table counts as ten pages), and would hash-join every account to it.
FINISH_FROM_ARRAYS = _FINISH_BATCH.format(
    balances="unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])"
)
FINISH_FROM_SCRATCH = _FINISH_BATCH.format(balances="balance_writes")
BALANCES_BY_ARRAYS_MAX = 200


async def _finish_batch(conn: asyncpg.Connection, rows: BatchRows, *, balances_copied: bool) -> None:
    """Balances, resolved holds, refusals, outbox rows (with the NOTIFY that wakes the relay when, and only
    if, the transaction commits) and the consumed offsets.

    Row locks: the balance UPDATE locks each account row it writes. Only the partition's current writer
    ever writes its accounts, and writers of one partition are serialised by the epoch row each batch
    holds (``_check_epoch``), so no two transactions ever wait on each other for account rows: there is
    no lock order to get wrong and no deadlock is possible."""
    await conn.execute(
        FINISH_FROM_SCRATCH if balances_copied else FINISH_FROM_ARRAYS,
        *_columns([] if balances_copied else rows.balances, 5),
        *_columns(rows.pending_states, 2),
        rows.now_us,
        *_columns(rows.rejections, 4),
        *_columns(rows.outbox, 6),
        *_columns(rows.offsets, 3),
        NOTIFY_CHANNEL,
    )


def _columns(records: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as one list per column (array parameters for ``unnest``)."""
    if not records:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*records, strict=True)]


# -- ownership and positions ---------------------------------------------------------------------
async def claim_partitions(conn: asyncpg.Connection, partitions: Sequence[int], writer_id: str) -> dict[int, int]:
    """Take over ``partitions``: bump each epoch so any previous writer is fenced; return the new epochs."""
    rows = await conn.fetch(
        """insert into ledger_partitions (partition, writer_epoch, writer_id, claimed_at)
           select p, 1, $2, now() from unnest($1::int[]) as p
           on conflict (partition) do update
             set writer_epoch = ledger_partitions.writer_epoch + 1, writer_id = $2, claimed_at = now()
           returning partition, writer_epoch""",
        sorted(partitions),
        writer_id,
    )
    return {r["partition"]: r["writer_epoch"] for r in rows}


async def heartbeat(conn: asyncpg.Connection, writer_id: str, partitions: str, lease_s: float) -> list[str]:
    """Renew ``writer_id``'s membership among the writers configured for ``partitions`` and return those
    whose lease is current (rows gone stale for an hour are swept). The statement's snapshot may not
    show this very heartbeat yet."""
    rows = await conn.fetch(
        """with beat as (
               insert into ledger_writers (writer_id, partitions, heartbeat_at) values ($1, $2, now())
               on conflict (writer_id) do update set partitions = $2, heartbeat_at = now()),
           swept as (delete from ledger_writers where heartbeat_at < now() - interval '1 hour')
           select writer_id from ledger_writers
           where partitions = $2 and heartbeat_at > now() - make_interval(secs => $3)""",
        writer_id,
        partitions,
        lease_s,
    )
    return [r["writer_id"] for r in rows]


async def partition_epochs(conn: asyncpg.Connection, partitions: Sequence[int]) -> dict[int, int]:
    """The current writer epoch of each of ``partitions`` (claimed ones only)."""
    rows = await conn.fetch(
        "select partition, writer_epoch from ledger_partitions where partition = any($1::int[])", list(partitions)
    )
    return {r["partition"]: r["writer_epoch"] for r in rows}


async def leave(conn: asyncpg.Connection, writer_id: str) -> None:
    """End ``writer_id``'s membership at once (a clean stop), so the others need not wait for its lease."""
    await conn.execute("delete from ledger_writers where writer_id = $1", writer_id)


async def consumed_positions(conn: asyncpg.Connection, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The next offset to read per Kafka partition, from this database (0 when never consumed)."""
    rows = await conn.fetch(
        "select kafka_partition, next_offset from consumed_offsets where topic = $1 and kafka_partition = any($2)",
        topic,
        list(partitions),
    )
    found = {r["kafka_partition"]: r["next_offset"] for r in rows}
    return {p: found.get(p, 0) for p in partitions}


async def due_holds(conn: asyncpg.Connection, partition: int, now_us: int, limit: int) -> list[str]:
    """Pending transfers of ``partition`` whose timeout has passed, oldest first."""
    rows = await conn.fetch(
        """select id from transfers
           where partition = $1 and pending_state = 'pending' and expires_at_us <= $2
           order by expires_at_us limit $3""",
        partition,
        now_us,
        limit,
    )
    return [r["id"] for r in rows]
