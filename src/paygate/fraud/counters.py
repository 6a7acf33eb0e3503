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

import redis.asyncio as aioredis

# Bucket sizes in hours, largest first, each a multiple of the next: a UTC day, six hours, an
# hour. The middle level keeps a window's ragged ends to at most 3 + 5 buckets each.
LEVELS: tuple[tuple[int, str], ...] = ((24, "d"), (6, "q"), (1, "h"))


class CounterStore(Protocol):
    """What the fraud features need from a cache. Missing or expired keys read as 0."""

    backend: str

    async def get_many(self, keys: Sequence[str]) -> list[int]: ...

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        """Add each amount to its key; each key then expires `ttl_s` seconds after its last
        increment."""
        ...

    async def add_once(self, key: str, ttl_s: int) -> bool:
        """Mark `key`; True only for the first caller while the mark lives."""
        ...

    async def add_once_many(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        """`add_once` of each key, in order, in one call (a key twice: the second is False)."""
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

    async def add_once_many(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        return [await self.add_once(key, ttl_s) for key in keys]

    def _tick(self, now: float, writes: int) -> None:
        # Expired keys nobody writes again are dropped in passes, to bound memory.
        self._writes += writes
        if self._writes >= self._purge_every:
            self._writes = 0
            self._data = {k: v for k, v in self._data.items() if v[1] > now}

    def __len__(self) -> int:
        return len(self._data)

    async def close(self) -> None:
        return None


# MGET answered as one string: a feature read touches ~200 keys, and parsing one reply is far
# cheaper than parsing 200 (about 0.6 ms against 1.4 ms with the pure-Python parser).
_MGET_JOINED = """
local values = redis.call('MGET', unpack(KEYS))
for i = 1, #KEYS do
  if not values[i] then values[i] = '0' end
end
return table.concat(values, ',')
"""

# Every key of one call incremented, and its expiry renewed, in one atomic step.
_INCR_MANY = """
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


class RedisCounterStore:
    """The scale-out `CounterStore` on Redis (redis-py asyncio), shared by every fraud worker:
    MGET (in a script answering one joined string) for reads, a Lua script (INCRBY + EXPIRE per
    key, atomic) for increments, and `SET NX EX` for the once-only mark (a batch's marks
    pipelined), so that of any number of concurrent deliveries of one payment exactly one wins
    the mark and counts it."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "paygate:") -> None:
        self._redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._incr = self._redis.register_script(_INCR_MANY)
        self._mget = self._redis.register_script(_MGET_JOINED)

    async def get_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        joined = await self._mget(keys=[self._prefix + k for k in keys])
        return [int(v) for v in _bytes(joined).split(b",")]

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        if updates:
            await self._incr(
                keys=[self._prefix + k for k, _ in updates],
                args=[int(ttl_s), *(int(amount) for _, amount in updates)],
            )

    async def add_once(self, key: str, ttl_s: int) -> bool:
        return bool(await self._redis.set(self._prefix + key, 1, nx=True, ex=int(ttl_s)))

    async def add_once_many(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)  # one round trip; each SET NX stays atomic
        for key in keys:
            pipe.set(self._prefix + key, 1, nx=True, ex=int(ttl_s))
        return [bool(won) for won in await pipe.execute()]

    async def close(self) -> None:
        await self._redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def counter_store_from_url(
    url: str | None, namespace: str = "paygate"
) -> MemoryCounterStore | RedisCounterStore:
    """Redis when `PAYGATE_REDIS_URL` is set (every worker sees the same counts; keys under
    `<namespace>:`), else memory (the embedded default, one process)."""
    return RedisCounterStore(url, prefix=f"{namespace}:") if url else MemoryCounterStore()


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
