"""Velocity counters behind a small protocol: integer counters with a time to live, read many at
once, and a once-only marker for idempotency. The embedded default keeps them in memory; the
scale-out backend keeps them in Redis (INCRBY + EXPIRE, MGET, SET NX EX), so every fraud worker
sees the same counts.

A time series (a card's payment count, a terminal's amounts, …) is stored as buckets: one counter
per hour, per six hours and per UTC day, all three incremented for each event. A window of whole
hours is then read as a few buckets at its ends and day buckets in between (at most 38 for 30
days) instead of up to 720 hour buckets:

    >>> window_keys("c:n", 24 * 100 + 5, 24 * 102 + 7)  # doctest: +NORMALIZE_WHITESPACE
    ['c:n:h2405', 'c:n:q401', 'c:n:q402', 'c:n:q403', 'c:n:d101',
     'c:n:q408', 'c:n:h2454', 'c:n:h2455']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol

# Bucket sizes in hours, largest first, each a multiple of the next: a UTC day, six hours, an
# hour. The middle level keeps a window's ragged ends to at most 3 + 5 buckets each.
LEVELS: tuple[tuple[int, str], ...] = ((24, "d"), (6, "q"), (1, "h"))


class CounterStore(Protocol):
    """What the fraud features need from a cache. Missing or expired keys read as 0."""

    async def get_many(self, keys: Sequence[str]) -> list[int]: ...

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        """Add each amount to its key; each key then expires `ttl_s` seconds after its last
        increment."""
        ...

    async def add_once(self, key: str, ttl_s: int) -> bool:
        """Mark `key`; True only for the first caller while the mark lives."""
        ...


class MemoryCounterStore:
    """The in-memory `CounterStore`. `clock` gives the current time in seconds (a replay passes
    the simulated clock so that expiry follows the data, not the wall)."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.time, purge_every: int = 100_000) -> None:
        self._clock = clock
        self._data: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self._writes = 0
        self._purge_every = purge_every

    async def get_many(self, keys: Sequence[str]) -> list[int]:
        now = self._clock()
        get = self._data.get
        out: list[int] = []
        for key in keys:
            item = get(key)
            out.append(item[0] if item is not None and item[1] > now else 0)
        return out

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        now = self._clock()
        expires = now + ttl_s
        data = self._data
        for key, amount in updates:
            item = data.get(key)
            value = item[0] if item is not None and item[1] > now else 0
            data[key] = (value + amount, expires)
        self._tick(now, len(updates))

    async def add_once(self, key: str, ttl_s: int) -> bool:
        now = self._clock()
        item = self._data.get(key)
        if item is not None and item[1] > now:
            return False
        self._data[key] = (1, now + ttl_s)
        self._tick(now, 1)
        return True

    def _tick(self, now: float, writes: int) -> None:
        # Expired keys nobody writes again are dropped in passes, to bound memory.
        self._writes += writes
        if self._writes >= self._purge_every:
            self._writes = 0
            self._data = {k: v for k, v in self._data.items() if v[1] > now}

    def __len__(self) -> int:
        return len(self._data)


def bucket_keys(series: str, hour: int) -> list[str]:
    """The buckets an event at `hour` (hours since the epoch, UTC) increments: one per level."""
    return [f"{series}:{tag}{hour // size}" for size, tag in LEVELS]


def window_keys(series: str, first_hour: int, last_hour: int) -> list[str]:
    """Keys whose sum is the count over the hours first_hour..last_hour, both included: the
    largest aligned buckets that fit, smaller ones only at the ragged ends."""
    return [f"{series}:{suffix}" for suffix in window_suffixes(first_hour, last_hour)]


@lru_cache(maxsize=4096)
def window_suffixes(first_hour: int, last_hour: int) -> tuple[str, ...]:
    # Cached: every payment in the same hour reads the same windows.
    lo, hi = first_hour, last_hour + 1  # [lo, hi) still to cover
    left: list[str] = []
    right: list[str] = []
    for (size, tag), (bigger, _) in zip(LEVELS[:0:-1], LEVELS[-2::-1], strict=True):
        up = min(-(-lo // bigger) * bigger, hi)
        left += [f"{tag}{n}" for n in range(lo // size, up // size)]
        lo = up
        down = max(hi // bigger * bigger, lo)
        right = [f"{tag}{n}" for n in range(down // size, hi // size)] + right
        hi = down
    size, tag = LEVELS[0]
    return (*left, *(f"{tag}{n}" for n in range(lo // size, hi // size)), *right)
