"""Do a rail's shards own every ledger partition exactly once? Gaps, overlaps and strays, named."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from payplane_operator.api.v1alpha1 import SecretKey


@dataclass(frozen=True, order=True)
class ShardRange:
    name: str
    first: int
    last: int  # inclusive
    # where the shard's database is (the rail's payment workers read balances there); not part of coverage
    database: SecretKey | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Overlap:
    first: int
    last: int
    shards: tuple[str, ...]


@dataclass(frozen=True)
class Coverage:
    partitions: int
    gaps: tuple[tuple[int, int], ...]  # inclusive ranges no shard owns
    overlaps: tuple[Overlap, ...]  # inclusive ranges owned by more than one shard
    outside: tuple[ShardRange, ...]  # shards reaching beyond the rail's partitions

    @property
    def complete(self) -> bool:
        return not (self.gaps or self.overlaps or self.outside)


def _runs(values: Sequence[tuple[str, ...]]) -> Iterable[tuple[int, int, tuple[str, ...]]]:
    """Maximal runs of equal owner tuples: (first, last, owners)."""
    start = 0
    for index in range(1, len(values) + 1):
        if index == len(values) or values[index] != values[start]:
            yield start, index - 1, values[start]
            start = index


def coverage(partitions: int, shards: Iterable[ShardRange]) -> Coverage:
    shards = sorted(shards)
    owners: list[list[str]] = [[] for _ in range(partitions)]
    outside = []
    for shard in shards:
        if shard.last >= partitions:
            outside.append(shard)
        for partition in range(shard.first, min(shard.last, partitions - 1) + 1):
            owners[partition].append(shard.name)
    runs = list(_runs([tuple(names) for names in owners]))
    return Coverage(
        partitions=partitions,
        gaps=tuple((first, last) for first, last, names in runs if not names),
        overlaps=tuple(Overlap(first, last, names) for first, last, names in runs if len(names) > 1),
        outside=tuple(outside),
    )


def span(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


def describe(result: Coverage) -> str:
    """One sentence per problem, e.g. ``partitions 4-7 have no shard; partition 2 is owned by a and b``."""
    if result.complete:
        return f"every partition of 0-{result.partitions - 1} is owned by exactly one shard"
    parts = []
    if result.gaps:
        gaps = ", ".join(span(first, last) for first, last in result.gaps)
        one = len(result.gaps) == 1 and result.gaps[0][0] == result.gaps[0][1]
        parts.append(f"partition {gaps} has no shard" if one else f"partitions {gaps} have no shard")
    for overlap in result.overlaps:
        owners = " and ".join(overlap.shards)
        if overlap.first == overlap.last:
            parts.append(f"partition {overlap.first} is owned by {owners}")
        else:
            parts.append(f"partitions {span(overlap.first, overlap.last)} are owned by {owners}")
    for shard in result.outside:
        parts.append(
            f"shard {shard.name} owns {span(shard.first, shard.last)}, beyond the rail's "
            f"{result.partitions} partitions (0-{result.partitions - 1})"
        )
    return "; ".join(parts)
