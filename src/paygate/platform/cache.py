"""The cache protocol and its two backends: memory (embedded default) and Redis (scale-out).

It holds what may be lost: cached reads, rate-limit and velocity counters. Nothing in it is ever
the only copy of a fact about money.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


class Cache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_s: float) -> bool:
        """Store `value` only if no newer `version` is cached, so a slow reader never puts an
        old state back over a new one. True when stored."""
        ...

    async def set_many_if_newer(
        self, entries: Sequence[tuple[str, bytes, int]], ttl_s: float
    ) -> None:
        """`set_if_newer` of each (key, value, version), in one round trip on Redis."""
        ...

    async def get_versioned(self, key: str) -> tuple[int, bytes] | None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, amount: int, ttl_s: float) -> int:
        """Add `amount` and return the new total; the key expires `ttl_s` after its creation."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A dict with expiry, for one process."""

    backend = "memory"

    def __init__(self, clock: object = time.monotonic, max_items: int = 100_000) -> None:
        self._clock = clock
        self._max = max_items
        self._data: dict[str, tuple[float, bytes, int]] = {}
        self._counters: dict[str, tuple[float, int]] = {}

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _live(self, key: str) -> tuple[float, bytes, int] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._now():
            del self._data[key]
            return None
        return item

    def _put(self, key: str, value: bytes, version: int, ttl_s: float) -> None:
        if len(self._data) >= self._max and key not in self._data:
            # Evict the entry closest to expiry: cheap, and never wrong for a cache.
            del self._data[min(self._data, key=lambda k: self._data[k][0])]
        self._data[key] = (self._now() + ttl_s, value, version)

    async def get(self, key: str) -> bytes | None:
        item = self._live(key)
        return None if item is None else item[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._put(key, value, 0, ttl_s)

    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_s: float) -> bool:
        item = self._live(key)
        if item is not None and item[2] >= version:
            return False
        self._put(key, value, version, ttl_s)
        return True

    async def set_many_if_newer(
        self, entries: Sequence[tuple[str, bytes, int]], ttl_s: float
    ) -> None:
        for key, value, version in entries:
            await self.set_if_newer(key, value, version, ttl_s)

    async def get_versioned(self, key: str) -> tuple[int, bytes] | None:
        item = self._live(key)
        return None if item is None else (item[2], item[1])

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)
            self._counters.pop(key, None)

    async def incr(self, key: str, amount: int, ttl_s: float) -> int:
        now = self._now()
        expires, value = self._counters.get(key, (0.0, 0))
        if expires <= now:
            expires, value = now + ttl_s, 0
        value += amount
        self._counters[key] = (expires, value)
        return value

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Compare-and-set on the version stored beside the value: atomic inside Redis.
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(value) == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


class RedisCache:
    """Redis (or Valkey): shared by every process of a scale-out deployment."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "paygate:") -> None:
        self._redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)
        self._incr = self._redis.register_script(_INCR)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.hget(self._k(key), "b")
        return None if value is None else _bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        name = self._k(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"v": 0, "b": value})
            pipe.pexpire(name, int(ttl_s * 1000))
            await pipe.execute()

    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_s: float) -> bool:
        stored = await self._set_if_newer(
            keys=[self._k(key)], args=[value, version, int(ttl_s * 1000)]
        )
        return bool(stored)

    async def set_many_if_newer(
        self, entries: Sequence[tuple[str, bytes, int]], ttl_s: float
    ) -> None:
        if len(entries) < 2:
            for key, value, version in entries:
                await self.set_if_newer(key, value, version, ttl_s)
            return
        ttl_ms = int(ttl_s * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for key, value, version in entries:
            pipe.evalsha(self._set_if_newer.sha, 1, self._k(key), value, version, ttl_ms)
        try:
            await pipe.execute()
        except NoScriptError:  # Redis lost its scripts (restarted, or flushed them): load it
            for key, value, version in entries:
                await self.set_if_newer(key, value, version, ttl_s)

    async def get_versioned(self, key: str) -> tuple[int, bytes] | None:
        version, value = await self._redis.hmget(self._k(key), ["v", "b"])
        if value is None:
            return None
        return int(version or 0), _bytes(value)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*(self._k(k) for k in keys))

    async def incr(self, key: str, amount: int, ttl_s: float) -> int:
        return int(await self._incr(keys=[self._k(key)], args=[amount, int(ttl_s * 1000)]))

    def script(self, source: str) -> Callable[[list[str], list[Any]], Awaitable[Any]]:
        """A Lua script run atomically inside Redis on keys of this cache (rate limits: one
        round trip for a whole check)."""
        registered = self._redis.register_script(source)

        async def run(keys: list[str], args: list[Any]) -> Any:
            return await registered(keys=[self._k(k) for k in keys], args=args)

        return run

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def cache_from_url(url: str | None, namespace: str = "paygate") -> Cache:
    """Redis when a URL is given (its keys under `<namespace>:`), else memory."""
    return RedisCache(url, prefix=f"{namespace}:") if url else MemoryCache()
