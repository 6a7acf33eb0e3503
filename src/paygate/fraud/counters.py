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


# An event's once-only mark and the increments it adds when it is counted.
Counted = tuple[str, Sequence[tuple[str, int]]]


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

    async def read_and_count(
        self, reads: Sequence[str], counted: Sequence[Counted], ttl_s: int, mark_ttl_s: int
    ) -> tuple[list[int], list[bool]]:
        """What a batch of events does in one call: the values of `reads` as they were before
        it, then, for each event in order, its mark set once (`add_once`, living `mark_ttl_s`)
        and, where this call set it, its increments added (`incr_many`, `ttl_s`). Returns the
        values and whether each mark was set here."""
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

    async def read_and_count(
        self, reads: Sequence[str], counted: Sequence[Counted], ttl_s: int, mark_ttl_s: int
    ) -> tuple[list[int], list[bool]]:
        values = await self.get_many(reads)
        firsts: list[bool] = []
        for mark, increments in counted:
            first = await self.add_once(mark, mark_ttl_s)
            if first:
                await self.incr_many(increments, ttl_s)
            firsts.append(first)
        return values, firsts

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


# The key names of a call go as one argument, joined by newlines, and the script adds the prefix:
# a feature read touches ~340 keys, and redis-py packs each argument of a command in Python
# (340 key arguments cost about 420 µs of the worker's CPU, one joined argument about 140 µs,
# docs/performance.md). The scripts reach keys not declared as KEYS, which a single Redis
# allows; the keys of one read span hash slots anyway, so a Redis Cluster never could take them.
_SPLIT = """
local keys = {}
for name in string.gmatch(ARGV[2], '[^\\n]+') do keys[#keys + 1] = ARGV[1] .. name end
"""

# MGET (in slices, within Lua's limit on unpacked values) answered as one string, missing keys
# as 0: parsing one reply is far cheaper than parsing hundreds.
_READ = """
local out = {}
for first = 1, #keys, 1000 do
  local values = redis.call('MGET', unpack(keys, first, math.min(first + 999, #keys)))
  for i = 1, #values do out[#out + 1] = values[i] or '0' end
end
"""
_MGET_JOINED = _SPLIT + _READ + "return table.concat(out, ',')"

# `read_and_count` in one atomic step: the read, then per event (ARGV[3], its marks) SET NX EX
# (ARGV[5]) and, where it was set, its share of the increments (ARGV[6] keys, ARGV[7] amounts,
# ARGV[8] how many each event has) with their expiry (ARGV[4]). Answers the values, then `;`,
# then a 1 or a 0 per event.
_READ_AND_COUNT = (
    _SPLIT
    + _READ
    + """
local function split(text)
  local items = {}
  for item in string.gmatch(text, '[^\\n]+') do items[#items + 1] = item end
  return items
end
local marks, names, amounts, sizes = split(ARGV[3]), split(ARGV[6]), split(ARGV[7]), split(ARGV[8])
local firsts = {}
local at = 0
for i = 1, #marks do
  local size = tonumber(sizes[i])
  if redis.call('SET', ARGV[1] .. marks[i], 1, 'NX', 'EX', ARGV[5]) then
    firsts[i] = '1'
    for j = at + 1, at + size do
      local key = ARGV[1] .. names[j]
      redis.call('INCRBY', key, amounts[j])
      redis.call('EXPIRE', key, ARGV[4])
    end
  else
    firsts[i] = '0'
  end
  at = at + size
end
return table.concat(out, ',') .. ';' .. table.concat(firsts)
"""
)

# Every key of one call incremented by its amount (ARGV[3], joined the same way), and its expiry
# renewed (ARGV[4]), in one atomic step.
_INCR_MANY = (
    _SPLIT
    + """
local i = 0
for amount in string.gmatch(ARGV[3], '[^\\n]+') do
  i = i + 1
  redis.call('INCRBY', keys[i], amount)
  redis.call('EXPIRE', keys[i], ARGV[4])
end
return i
"""
)


def _joined(names: Sequence[str]) -> str:
    """The key names as one argument of the scripts. A name holding a newline would split in
    two; no key built here can (ids, fingerprints and bucket suffixes), so one that does is a
    bug, refused rather than counted under the wrong keys."""
    if not names:
        return ""
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1 or "" in names:
        raise ValueError("a counter key is empty or holds a newline")
    return joined


class RedisCounterStore:
    """The scale-out `CounterStore` on Redis (redis-py asyncio), shared by every fraud worker:
    MGET (in a script answering one joined string) for reads, a Lua script (INCRBY + EXPIRE per
    key, atomic) for increments, `SET NX EX` for the once-only mark, and one script doing all
    three for a batch (`read_and_count`), so that of any number of concurrent deliveries of one
    payment exactly one wins the mark and counts it."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "paygate:") -> None:
        self._redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._incr = self._redis.register_script(_INCR_MANY)
        self._mget = self._redis.register_script(_MGET_JOINED)
        self._read_and_count = self._redis.register_script(_READ_AND_COUNT)

    async def get_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        joined = await self._mget(args=[self._prefix, _joined(keys)])
        return [int(v) for v in _bytes(joined).split(b",")]

    async def incr_many(self, updates: Sequence[tuple[str, int]], ttl_s: int) -> None:
        if updates:
            names = _joined([k for k, _ in updates])
            amounts = "\n".join(str(int(amount)) for _, amount in updates)
            await self._incr(args=[self._prefix, names, amounts, int(ttl_s)])

    async def add_once(self, key: str, ttl_s: int) -> bool:
        return bool(await self._redis.set(self._prefix + key, 1, nx=True, ex=int(ttl_s)))

    async def read_and_count(
        self, reads: Sequence[str], counted: Sequence[Counted], ttl_s: int, mark_ttl_s: int
    ) -> tuple[list[int], list[bool]]:
        increments = [item for _, items in counted for item in items]
        answer = await self._read_and_count(
            args=[
                self._prefix,
                _joined(reads),
                _joined([mark for mark, _ in counted]),
                int(ttl_s),
                int(mark_ttl_s),
                _joined([key for key, _ in increments]),
                "\n".join(str(int(amount)) for _, amount in increments),
                "\n".join(str(len(items)) for _, items in counted),
            ]
        )
        values, _, firsts = _bytes(answer).partition(b";")
        read = [int(v) for v in values.split(b",")] if reads else []
        return read, [flag == ord("1") for flag in firsts]

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
