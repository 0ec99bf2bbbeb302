-- Autovacuum on the tables every payment writes, at a tenth of PostgreSQL's default pace (it sleeps 20 ms
-- instead of 2 ms after each 200 units of cost work). At the default pace a vacuum or analyse pass over
-- pages that are in memory runs at the full speed of a core, and on a machine the payment path keeps
-- busy that burst of CPU stretches the latency tail of every request that meets it (docs/benchmarks.md,
-- "Autovacuum at a gentler pace"). A tenth of the default still cleans about 500 dirtied pages a second
-- per table, far more than these tables produce at the payment path's full load (tens).
alter table payments set (autovacuum_vacuum_cost_delay = 20);
alter table refunds set (autovacuum_vacuum_cost_delay = 20);
alter table ledger_ops set (autovacuum_vacuum_cost_delay = 20);
alter table idempotency_keys set (autovacuum_vacuum_cost_delay = 20);
alter table outbox set (autovacuum_vacuum_cost_delay = 20);
