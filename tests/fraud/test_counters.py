from __future__ import annotations

import random

from paygate.fraud.counters import LEVELS, MemoryCounterStore, bucket_keys, window_keys

SIZES = {tag: size for size, tag in LEVELS}


def _hours(keys: list[str]) -> list[int]:
    hours: list[int] = []
    for key in keys:
        bucket = key.rsplit(":", 1)[1]
        size, n = SIZES[bucket[0]], int(bucket[1:])
        hours += range(n * size, (n + 1) * size)
    return sorted(hours)


def test_window_keys_cover_exactly_the_hours() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        first = rng.randint(0, 5_000)
        last = first + rng.randint(-2, 800)
        keys = window_keys("s", first, last)
        assert _hours(keys) == list(range(first, last + 1))
        assert len(keys) == len(set(keys))
    assert max(len(window_keys("s", h, h + 30 * 24 - 1)) for h in range(48)) <= 38


def test_an_event_lands_in_every_window_holding_its_hour() -> None:
    hour = 24 * 1_000 + 13
    mine = set(bucket_keys("s", hour))
    assert len(set(window_keys("s", hour - 100, hour)) & mine) == 1
    assert not set(window_keys("s", hour + 1, hour + 100)) & mine


async def test_memory_store_counts_and_expires() -> None:
    now = [1_000.0]
    store = MemoryCounterStore(clock=lambda: now[0])
    await store.incr_many([("a", 2), ("b", 5), ("a", 3)], ttl_s=60)
    assert await store.get_many(["a", "b", "c"]) == [5, 5, 0]
    now[0] += 59
    await store.incr_many([("b", 1)], ttl_s=60)
    now[0] += 2  # "a" expired; "b" was refreshed by its increment
    assert await store.get_many(["a", "b"]) == [0, 6]
    await store.incr_many([("a", 1)], ttl_s=60)
    assert await store.get_many(["a"]) == [1]


async def test_add_once_marks_once_until_expiry() -> None:
    now = [0.0]
    store = MemoryCounterStore(clock=lambda: now[0])
    assert await store.add_once("seen:1", ttl_s=10)
    assert not await store.add_once("seen:1", ttl_s=10)
    now[0] = 11
    assert await store.add_once("seen:1", ttl_s=10)


async def test_expired_keys_are_purged() -> None:
    now = [0.0]
    store = MemoryCounterStore(clock=lambda: now[0], purge_every=10)
    await store.incr_many([(f"k{i}", 1) for i in range(9)], ttl_s=5)
    now[0] = 6
    await store.incr_many([("fresh", 1)], ttl_s=5)
    assert len(store) == 1
