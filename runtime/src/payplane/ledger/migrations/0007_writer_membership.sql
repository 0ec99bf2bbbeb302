-- The writers of one shard share its partitions. Each live writer heartbeats a row here; every writer
-- derives the same assignment from the set of live rows (partition i of the shard goes to the
-- (i mod n)-th live writer by id), claims what it is given (bumping the epoch fences the previous
-- owner) and lets go of the rest. A writer that stops heartbeating is gone after the lease expires.
-- Writers share with those configured for the same partitions (`partitions`, e.g. '0-3'): writers
-- started by hand for disjoint partitions of one database each keep their own.
create table ledger_writers (
    writer_id       text        primary key,
    partitions      text        not null,
    heartbeat_at    timestamptz not null
);
