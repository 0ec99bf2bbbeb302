-- The W3C trace context of the request that wrote a row: outbox rows carry it to Kafka as the
-- `traceparent` header; a payment keeps its trace id so later log lines (its settlement) name it.
alter table outbox add column traceparent text;
alter table payments add column trace_id text not null default '';
