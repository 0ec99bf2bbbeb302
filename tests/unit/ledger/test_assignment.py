"""The split of a shard's partitions among its live writers: each partition exactly once, balanced,
the same from every writer's point of view, and a writer that has not heartbeated yet counts itself."""

from hypothesis import given
from hypothesis import strategies as st

from payplane.ledger.assignment import owned_partitions

writer_ids = st.sets(st.text(alphabet="abcdefgh-0123456789", min_size=1, max_size=12), min_size=1, max_size=8)
partition_sets = st.sets(st.integers(min_value=0, max_value=4095), min_size=1, max_size=64)


@given(writer_ids, partition_sets)
def test_every_partition_has_exactly_one_owner_and_shares_differ_by_at_most_one(
    writers: set[str], partitions: set[int]
) -> None:
    shares = {w: owned_partitions(w, writers, sorted(partitions)) for w in writers}
    owned = [p for share in shares.values() for p in share]
    assert sorted(owned) == sorted(partitions)
    sizes = [len(share) for share in shares.values()]
    assert max(sizes) - min(sizes) <= 1


@given(writer_ids, partition_sets)
def test_a_writer_missing_from_the_view_counts_itself(writers: set[str], partitions: set[int]) -> None:
    newcomer = "zz-newcomer"
    seen_by_newcomer = owned_partitions(newcomer, writers, sorted(partitions))
    seen_by_all = owned_partitions(newcomer, writers | {newcomer}, sorted(partitions))
    assert seen_by_newcomer == seen_by_all


def test_one_writer_owns_everything_and_two_split_alternately() -> None:
    assert owned_partitions("w-a", [], [3, 1, 2, 0]) == [0, 1, 2, 3]
    assert owned_partitions("w-a", ["w-b"], [0, 1, 2, 3]) == [0, 2]
    assert owned_partitions("w-b", ["w-a", "w-b"], [0, 1, 2, 3]) == [1, 3]
    assert owned_partitions("w-c", ["w-a", "w-b"], [0, 1]) == []
