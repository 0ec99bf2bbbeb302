-- The ledger shard's schema. One shard database holds the ledger partitions its LedgerShard owns.
-- Balances are bigint minor units; every table names the partition so a partition can move shards.

create table ledger_partitions (
    partition       integer primary key,
    writer_epoch    bigint  not null default 0,   -- bumped by every takeover; a stale writer is fenced
    writer_id       text,
    claimed_at      timestamptz
);

-- Kafka offsets consumed into this database, committed in the same transaction as their effects.
create table consumed_offsets (
    topic           text    not null,
    kafka_partition integer not null,
    next_offset     bigint  not null,
    primary key (topic, kafka_partition)
);

create table accounts (
    id                              text primary key,
    partition                       integer not null,
    currency                        text    not null check (currency ~ '^[A-Z]{3}$'),
    owner                           text    not null,
    status                          text    not null default 'active'
                                        check (status in ('active', 'frozen', 'closed')),
    debits_must_not_exceed_credits  boolean not null default false,
    credits_must_not_exceed_debits  boolean not null default false,
    internal                        boolean not null default false,
    overdraft_limit_minor           bigint  not null default 0 check (overdraft_limit_minor >= 0),
    debits_pending_minor            bigint  not null default 0 check (debits_pending_minor >= 0),
    debits_posted_minor             bigint  not null default 0 check (debits_posted_minor >= 0),
    credits_pending_minor           bigint  not null default 0 check (credits_pending_minor >= 0),
    credits_posted_minor            bigint  not null default 0 check (credits_posted_minor >= 0),
    created_at_us                   bigint  not null,
    check (not (debits_must_not_exceed_credits and credits_must_not_exceed_debits)),
    check (not debits_must_not_exceed_credits
           or debits_pending_minor + debits_posted_minor <= credits_posted_minor + overdraft_limit_minor),
    check (not credits_must_not_exceed_debits
           or credits_pending_minor + credits_posted_minor <= debits_posted_minor)
);
create index accounts_partition on accounts (partition);

-- Applied transfers: immutable, except pending_state of a pending transfer.
create table transfers (
    id                  text primary key,
    partition           integer not null,
    mode                text    not null check (mode in ('posted', 'pending', 'post_pending', 'void_pending')),
    kind                text    not null,
    debit_account_id    text    not null references accounts (id),
    credit_account_id   text    not null references accounts (id),
    amount_minor        bigint  not null check (amount_minor > 0),
    currency            text    not null,
    pending_id          text    references transfers (id),
    timeout_s           integer not null default 0,
    expires_at_us       bigint,
    pending_state       text    check (pending_state in ('pending', 'posted', 'voided', 'expired')),
    request             jsonb   not null,   -- the request as submitted: retries are compared to it
    payment_ref         text    not null default '',
    applied_at_us       bigint  not null
);
create index transfers_open_holds on transfers (partition, expires_at_us) where pending_state = 'pending';
create index transfers_payment_ref on transfers (payment_ref) where payment_ref <> '';
-- a pending transfer is resolved (posted or voided) by at most one transfer
create unique index transfers_one_resolution on transfers (pending_id) where pending_id is not null;

-- Transfers refused with a final result: a retry gets the same answer, never a second decision.
create table rejections (
    id              text primary key,
    partition       integer not null,
    result          text    not null,
    request         jsonb   not null,
    rejected_at_us  bigint  not null
);

-- One debit and one credit entry per posted movement; posted balances are their sums.
create table entries (
    transfer_id     text    not null references transfers (id),
    account_id      text    not null references accounts (id),
    side            text    not null check (side in ('debit', 'credit')),
    amount_minor    bigint  not null check (amount_minor > 0),
    partition       integer not null,
    primary key (transfer_id, side)
);
create index entries_account on entries (account_id);

-- Transactional outbox: results for the payment worker, relayed to Kafka at least once.
create table outbox (
    id              bigint generated always as identity primary key,
    partition       integer not null,
    topic           text    not null,
    message_key     bytea,
    payload         bytea   not null,
    created_at      timestamptz not null default clock_timestamp(),
    published_at    timestamptz
);
create index outbox_unpublished on outbox (id) where published_at is null;
