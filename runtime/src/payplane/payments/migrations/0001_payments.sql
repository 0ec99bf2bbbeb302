-- A rail's payments database: API clients, accounts, payments, refunds, the ledger operations sent for
-- them, idempotency records and the transactional outbox. Amounts are integer minor units.

create table api_clients (
    id              text primary key,               -- cli_...
    name            text not null,
    role            text not null check (role in ('client', 'admin')),
    key_id          text not null unique,           -- the public part of the key (sk_<key_id>_<secret>)
    key_hash        text not null,                  -- sha256 of the whole key; the key itself is never stored
    created_at      timestamptz not null default now(),
    revoked_at      timestamptz
);

create table accounts (
    id              text primary key,               -- acct_...; also the ledger account id
    client_id       text not null,
    currency        text not null,
    type            text not null check (type in ('wallet', 'external')),
    description     text not null default '',
    created_at_us   bigint not null
);
create index accounts_by_client on accounts (client_id);

create table payments (
    seq             bigint generated always as identity unique,  -- listing order (newest first)
    id              text primary key,               -- pay_...
    client_id       text not null,
    amount_minor    bigint not null check (amount_minor > 0),
    currency        text not null,
    source_account_id       text not null,
    destination_account_id  text not null,
    capture_method  text not null,
    status          text not null,
    captured_minor  bigint not null default 0,
    refunded_minor  bigint not null default 0,
    refund_pending_minor bigint not null default 0,
    review          boolean not null default false,
    fraud_rule      text not null default '',
    failure_code    text not null default '',
    description     text not null default '',
    pending_action  text not null default '',
    created_at_us   bigint not null,
    updated_at_us   bigint not null,
    check (refunded_minor + refund_pending_minor <= captured_minor),
    check (captured_minor <= amount_minor)
);
create index payments_by_client on payments (client_id, seq desc);

create table refunds (
    id              text primary key,               -- re_...
    payment_id      text not null references payments (id),
    client_id       text not null,
    amount_minor    bigint not null check (amount_minor > 0),
    status          text not null,
    failure_code    text not null default '',
    created_at_us   bigint not null
);

-- Every transfer requested from the ledger; resolved once, by its first outcome.
create table ledger_ops (
    transfer_id     text primary key,
    payment_id      text not null references payments (id),
    kind            text not null,
    amount_minor    bigint,
    refund_id       text not null default '',
    result          text,                            -- null while the ledger has not answered
    requested_at_us bigint not null,
    resolved_at_us  bigint
);

-- The idempotency contract's truth: the first response per (client, key), for the retention window.
create table idempotency_keys (
    client_id       text not null,
    key             text not null,
    fingerprint     text not null,
    response        bytea not null,                  -- the serialized first response, replayed byte for byte
    created_at      timestamptz not null default now(),
    expires_at      timestamptz not null,
    primary key (client_id, key)
);
create index idempotency_keys_expiry on idempotency_keys (expires_at);

-- Transactional outbox (ledger commands, payment events), relayed by payplane.adapters.outbox_relay.
create table outbox (
    id              bigint generated always as identity primary key,
    topic           text    not null,
    kafka_partition integer,
    message_key     bytea,
    payload         bytea   not null,
    created_at      timestamptz not null default clock_timestamp(),
    published_at    timestamptz
);
create index outbox_unpublished on outbox (id) where published_at is null;
