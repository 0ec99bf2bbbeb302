-- A batch's outcome messages (one per transfer) are written as ONE outbox row whose payload packs them
-- all (msgpack list of [key, value]); the relay unpacks and sends each as its own Kafka message. A row
-- per outcome cost an insert, two index entries and a non-HOT update when published, per transfer.
-- Legs for other partitions stay one row each (they name their Kafka partition).
alter table outbox add column packed boolean not null default false;
-- packed payloads are tens of kilobytes of already compact JSON: stored out of line, not compressed
alter table outbox alter column payload set storage external;
