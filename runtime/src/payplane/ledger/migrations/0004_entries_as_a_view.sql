-- A posted transfer row already is its pair of entries (debit account, credit account, amount), so the
-- entries table duplicated two rows per transfer on the hot path. Entries become a view over posted
-- movements (single-phase transfers and posts of holds); voids and holds are not postings.
-- Accounts get room on each page so balance updates stay HOT (no index writes: balances are not indexed).
drop table entries;
create view entries (transfer_id, account_id, side, amount_minor, partition) as
    select id, debit_account_id, 'debit'::text, amount_minor, partition
    from transfers where mode in ('posted', 'post_pending')
    union all
    select id, credit_account_id, 'credit'::text, amount_minor, partition
    from transfers where mode in ('posted', 'post_pending');
alter table accounts set (fillfactor = 70);
