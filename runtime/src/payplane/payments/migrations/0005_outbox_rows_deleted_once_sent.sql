-- The relay deletes the rows it sent in the transaction that claimed them, instead of marking them
-- published and leaving them for a cleanup to delete an hour later: a row is now an insert and a delete
-- (before: an insert, a non-HOT update adding an index entry, and a delete), and the table holds only
-- what is still to be sent. Every remaining row is unpublished, so the partial index of those is the
-- primary key. A relay of an older release that marks a row after this ran fails its round and rolls it
-- back; the rows are sent again by a current relay, and consumers deduplicate by event id.
drop index outbox_unpublished;
alter table outbox drop column published_at;
