"""Shard coverage of a rail's partitions: gaps, overlaps and strays, and what the condition says."""

from hypothesis import given
from hypothesis import strategies as st

from payplane_operator.api.conditions import Reason
from payplane_operator.desired.coverage import Overlap, ShardRange, coverage, describe
from payplane_operator.reconcile.rail import coverage_condition


def test_two_shards_splitting_the_rail_cover_it() -> None:
    result = coverage(8, [ShardRange("a", 0, 3), ShardRange("b", 4, 7)])
    assert result.complete
    assert describe(result) == "every partition of 0-7 is owned by exactly one shard"


def test_gaps_are_named_as_ranges() -> None:
    result = coverage(16, [ShardRange("a", 0, 3), ShardRange("b", 6, 6), ShardRange("c", 9, 14)])
    assert result.gaps == ((4, 5), (7, 8), (15, 15))
    assert describe(result) == "partitions 4-5, 7-8, 15 have no shard"


def test_overlaps_name_the_shards() -> None:
    result = coverage(8, [ShardRange("a", 0, 5), ShardRange("b", 4, 7)])
    assert result.overlaps == (Overlap(4, 5, ("a", "b")),)
    assert describe(result) == "partitions 4-5 are owned by a and b"


def test_single_partitions_read_in_the_singular() -> None:
    assert describe(coverage(4, [ShardRange("a", 0, 2)])) == "partition 3 has no shard"
    assert describe(coverage(4, [ShardRange("a", 0, 2), ShardRange("b", 2, 3)])) == "partition 2 is owned by a and b"


def test_shards_beyond_the_rail_are_named() -> None:
    result = coverage(4, [ShardRange("a", 0, 5)])
    assert result.outside == (ShardRange("a", 0, 5),)
    assert "shard a owns 0-5, beyond the rail's 4 partitions (0-3)" in describe(result)


def test_condition_reasons() -> None:
    assert coverage_condition(4, []).reason is Reason.NO_SHARDS
    assert coverage_condition(4, [ShardRange("a", 0, 1)]).reason is Reason.COVERAGE_GAPS
    assert coverage_condition(4, [ShardRange("a", 0, 3), ShardRange("b", 3, 3)]).reason is Reason.COVERAGE_OVERLAPS
    assert coverage_condition(4, [ShardRange("a", 0, 4)]).reason is Reason.OUTSIDE_RAIL
    covered = coverage_condition(4, [ShardRange("a", 0, 3)])
    assert covered.status is True
    assert covered.reason is Reason.COVERED
    gap = coverage_condition(8, [ShardRange("a", 0, 3)])
    assert gap.status is False
    assert "partitions 4-7 have no shard" in gap.message


@st.composite
def rails_and_shards(draw: st.DrawFn) -> tuple[int, list[ShardRange]]:
    partitions = draw(st.integers(1, 64))
    shards = []
    for index in range(draw(st.integers(0, 6))):
        first = draw(st.integers(0, partitions + 2))
        shards.append(ShardRange(f"s{index}", first, draw(st.integers(first, partitions + 4))))
    return partitions, shards


@given(rails_and_shards())
def test_complete_exactly_when_every_partition_has_one_owner(case: tuple[int, list[ShardRange]]) -> None:
    partitions, shards = case
    owners = [sum(s.first <= p <= s.last for s in shards) for p in range(partitions)]
    in_bounds = all(s.last < partitions for s in shards)
    result = coverage(partitions, shards)
    assert result.complete == (all(count == 1 for count in owners) and in_bounds)
    gap_partitions = {p for first, last in result.gaps for p in range(first, last + 1)}
    assert gap_partitions == {p for p, count in enumerate(owners) if count == 0}
    overlap_partitions = {p for o in result.overlaps for p in range(o.first, o.last + 1)}
    assert overlap_partitions == {p for p, count in enumerate(owners) if count > 1}
