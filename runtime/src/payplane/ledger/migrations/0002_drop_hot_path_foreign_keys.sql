-- The writer inserts thousands of transfers and entries per transaction; each foreign key costs a
-- lookup per row and a share lock on the referenced account. The engine only applies transfers whose
-- accounts it loaded, and `payplane ledger verify` checks every entry against its account, so the
-- hot path drops these keys. Primary keys and balance checks stay.
alter table transfers drop constraint transfers_debit_account_id_fkey;
alter table transfers drop constraint transfers_credit_account_id_fkey;
alter table transfers drop constraint transfers_pending_id_fkey;
alter table entries drop constraint entries_transfer_id_fkey;
alter table entries drop constraint entries_account_id_fkey;
