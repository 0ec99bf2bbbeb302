"""Which of a shard's partitions a writer owns, given the shard's live writers: pure and deterministic,
so every writer that sees the same membership computes the same split without talking to the others.

Partitions go round-robin over the live writers sorted by id: each writer gets ⌊P/n⌋ or ⌈P/n⌉ of the
P partitions and every partition has exactly one owner. While views of the membership differ (a writer
has just joined or died) two writers may both claim a partition: the claim bumps its epoch, so the
one that claimed first is fenced at its next commit and lets the partition go; nothing is applied twice.
"""

from collections.abc import Iterable, Sequence


def owned_partitions(writer_id: str, live_writers: Iterable[str], partitions: Sequence[int]) -> list[int]:
    """The partitions ``writer_id`` owns (it counts itself live even before its own heartbeat shows)."""
    writers = sorted({*live_writers, writer_id})
    index = writers.index(writer_id)
    ordered = sorted(partitions)
    return [p for i, p in enumerate(ordered) if i % len(writers) == index]
