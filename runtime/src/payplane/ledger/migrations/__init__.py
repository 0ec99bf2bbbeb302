"""The ledger shard database's schema, as numbered forward-only SQL migrations."""
