"""Ids from the pooled OS randomness: the length asked for, hex, never repeating, across pool refills."""

from payplane.platform import random_ids


def test_tokens_have_the_asked_length_and_never_repeat_across_refills() -> None:
    count = 3 * random_ids.POOL_BYTES // 12  # three refills of the pool
    tokens = [random_ids.token_hex(12) for _ in range(count)]
    assert all(len(t) == 24 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) == count


def test_a_token_larger_than_the_pool_is_served_whole() -> None:
    assert len(random_ids.token_hex(random_ids.POOL_BYTES + 1)) == 2 * (random_ids.POOL_BYTES + 1)
