-- The request a transfer or refusal was made with is kept only to compare retries with and to follow
-- cross-partition legs; it is written by the writer (compact JSON) and read back by it. Stored as jsonb,
-- PostgreSQL parsed every one of them on the hot path (a third of the cost of a transfer row). As text
-- it is stored as written; queries that look inside cast it (`request::jsonb`).
alter table transfers alter column request type text using request::text;
alter table rejections alter column request type text using request::text;
