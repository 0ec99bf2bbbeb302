"""Which ledger partition an account lives on: one stable function shared by operator and runtime.

Jump consistent hashing (Lamping & Veach, 2014) over a 64-bit BLAKE2b digest of the account id:
- stable: the same id and partition count give the same partition on every machine and version;
- even: accounts spread uniformly over the partitions;
- minimal movement: growing a rail from ``n`` to ``m`` partitions moves only the accounts that land
  on the new partitions (a fraction ``(m - n) / m``), never between old ones.

Transit accounts (``~transit:<CUR>:<partition>``), through which cross-partition transfers move, are
pinned to the partition their id names.
"""

import hashlib
import re
from typing import Final

PARTITION_COUNT_MAX: Final = 4096
_JUMP_MULTIPLIER: Final = 2862933555777941757
_MASK_64: Final = (1 << 64) - 1


TRANSIT_PREFIX: Final = "~transit:"
_TRANSIT_ID = re.compile(r"^~transit:([A-Z]{3}):(\d{1,4})$")


class PartitionCountError(ValueError):
    """A partition count outside 1..PARTITION_COUNT_MAX."""


def account_key(account_id: str) -> int:
    """The 64-bit hash of an account id that every placement decision starts from."""
    digest = hashlib.blake2b(account_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def jump_hash(key: int, bucket_count: int) -> int:
    """Jump consistent hash of a 64-bit key into ``bucket_count`` buckets."""
    bucket, candidate = -1, 0
    while candidate < bucket_count:
        bucket = candidate
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK_64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def transit_account_id(currency: str, partition: int) -> str:
    """The internal account through which cross-partition money leaves or enters ``partition``."""
    return f"{TRANSIT_PREFIX}{currency}:{partition}"


def _pinned_partition(account_id: str, partition_count: int) -> int | None:
    """Transit accounts live on the partition their id names, not where the hash would put them."""
    match = _TRANSIT_ID.match(account_id)
    if match is None:
        return None
    partition = int(match.group(2))
    return partition if partition < partition_count else None


def ledger_partition_for_account(account_id: str, partition_count: int) -> int:
    """The ledger partition (0-based) that owns ``account_id`` when the rail has ``partition_count``."""
    if not 1 <= partition_count <= PARTITION_COUNT_MAX:
        raise PartitionCountError(f"partition_count must be within 1..{PARTITION_COUNT_MAX}, got {partition_count}")
    if not account_id:
        raise ValueError("account_id must not be empty")
    pinned = _pinned_partition(account_id, partition_count)
    if pinned is not None:
        return pinned
    return jump_hash(account_key(account_id), partition_count)
