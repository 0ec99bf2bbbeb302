"""Properties of the account → ledger-partition mapping shared by operator and runtime."""

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payplane_contracts.partitions import (
    PARTITION_COUNT_MAX,
    PartitionCountError,
    ledger_partition_for_account,
    transit_account_id,
)

account_ids = st.text(min_size=1, max_size=64)
counts = st.integers(min_value=1, max_value=PARTITION_COUNT_MAX)


@given(account_ids, counts)
def test_in_range_and_deterministic(account_id: str, count: int) -> None:
    partition = ledger_partition_for_account(account_id, count)
    assert 0 <= partition < count
    assert ledger_partition_for_account(account_id, count) == partition


@given(account_ids, st.integers(min_value=1, max_value=PARTITION_COUNT_MAX - 1))
def test_growth_moves_accounts_only_onto_the_new_partition(account_id: str, count: int) -> None:
    before = ledger_partition_for_account(account_id, count)
    after = ledger_partition_for_account(account_id, count + 1)
    assert after in (before, count)


def test_stable_across_versions() -> None:
    """Pinned values: changing the function would silently move every account; this must never pass."""
    assert [ledger_partition_for_account(f"acct_{i}", 16) for i in range(8)] == PINNED_FIRST_EIGHT_OF_16
    assert ledger_partition_for_account("acct_merchant_1", 64) == PINNED_MERCHANT_1_OF_64
    assert ledger_partition_for_account("world:EUR", 8) == PINNED_WORLD_EUR_OF_8


def test_spread_is_even() -> None:
    partitions = 16
    accounts = 32_000
    counts = collections.Counter(ledger_partition_for_account(f"acct_{i}", partitions) for i in range(accounts))
    expected = accounts / partitions
    assert set(counts) == set(range(partitions))
    assert max(abs(c - expected) / expected for c in counts.values()) < 0.08


def test_growth_moves_the_expected_fraction() -> None:
    accounts = [f"acct_{i}" for i in range(20_000)]
    moved = sum(ledger_partition_for_account(a, 8) != ledger_partition_for_account(a, 10) for a in accounts)
    assert abs(moved / len(accounts) - 2 / 10) < 0.02


@pytest.mark.parametrize("bad_count", [0, -1, PARTITION_COUNT_MAX + 1])
def test_refuses_bad_partition_counts(bad_count: int) -> None:
    with pytest.raises(PartitionCountError, match="partition_count"):
        ledger_partition_for_account("acct", bad_count)


def test_refuses_empty_account_id() -> None:
    with pytest.raises(ValueError, match="account_id"):
        ledger_partition_for_account("", 4)


PINNED_MERCHANT_1_OF_64 = 46
PINNED_WORLD_EUR_OF_8 = 7
PINNED_FIRST_EIGHT_OF_16 = [15, 2, 9, 13, 5, 14, 8, 14]


def test_transit_accounts_live_on_the_partition_they_name() -> None:
    for partition in (0, 3, 15):
        assert ledger_partition_for_account(transit_account_id("EUR", partition), 16) == partition
    # a transit id naming a partition the rail does not have is just an account id, hashed as usual
    assert 0 <= ledger_partition_for_account(transit_account_id("EUR", 40), 16) < 16
