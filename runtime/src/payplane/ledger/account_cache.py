"""Accounts of the partitions a writer owns, kept in memory between batches.

Sound because the writer is their only writer (a newer writer fences it by epoch): what it last
committed is what the database holds. The batch mutates cached objects in place, so any failure before
the commit is followed by ``clear()``, and the next batch reloads from the database.
"""

from collections.abc import Callable, Iterable
from typing import Final

from payplane.ledger.engine import Ledger
from payplane.ledger.model import Account

ACCOUNTS_CACHED_MAX: Final = 250_000


class AccountCache:
    def __init__(self, is_owned: Callable[[str], bool], max_entries: int = ACCOUNTS_CACHED_MAX) -> None:
        self.is_owned = is_owned
        self.max_entries = max_entries
        self._accounts: dict[str, Account] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def missing(self, account_ids: Iterable[str]) -> set[str]:
        return {a for a in account_ids if a not in self._accounts}

    def fill(self, ledger: Ledger, account_ids: Iterable[str]) -> None:
        """Make ``ledger`` use the cached objects for every account it needs that the cache holds."""
        for account_id in list(ledger.accounts):
            cached = self._accounts.get(account_id)
            if cached is not None:
                ledger.accounts[account_id] = cached
        for account_id in account_ids:
            cached = self._accounts.get(account_id)
            if cached is not None:
                ledger.accounts[account_id] = cached

    def remember(self, ledger: Ledger) -> None:
        """After a commit: keep the owned accounts the batch used (they now match the database)."""
        if len(self._accounts) + len(ledger.accounts) > self.max_entries:
            self._accounts.clear()
        cached = self._accounts
        for account_id, account in ledger.accounts.items():
            # most are the cached objects already (``fill`` put them there): only new ones need checking
            if cached.get(account_id) is not account and self.is_owned(account_id):
                cached[account_id] = account

    def clear(self) -> None:
        self._accounts.clear()
