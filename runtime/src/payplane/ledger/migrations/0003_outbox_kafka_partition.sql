-- Cross-partition legs are addressed to a ledger partition (jump hash of the account), which is not
-- the partition Kafka's key hashing would pick: the outbox row says where the message must land.
alter table outbox add column kafka_partition integer;
