"""One contract for both caches: memory and a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from paygate.platform.cache import Cache, MemoryCache, RedisCache


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    c: Cache
    if request.param == "memory":
        c = MemoryCache()
    else:
        c = RedisCache(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex}:")
    yield c
    await c.close()


async def test_get_set_delete_and_expiry(cache: Cache) -> None:
    assert await cache.get("a") is None
    await cache.set("a", b"1", ttl_s=0.2)
    assert await cache.get("a") == b"1"
    await cache.delete("a")
    assert await cache.get("a") is None
    await cache.set("b", b"2", ttl_s=0.1)
    await asyncio.sleep(0.25)
    assert await cache.get("b") is None


async def test_set_if_newer_never_puts_an_old_state_back(cache: Cache) -> None:
    assert await cache.set_if_newer("p", b"v2", 2, ttl_s=10)
    assert not await cache.set_if_newer("p", b"v1", 1, ttl_s=10)  # a slow reader's old read
    assert not await cache.set_if_newer("p", b"v2bis", 2, ttl_s=10)
    assert await cache.get_versioned("p") == (2, b"v2")
    assert await cache.set_if_newer("p", b"v3", 3, ttl_s=10)
    assert await cache.get("p") == b"v3"


async def test_set_if_newer_under_concurrency_keeps_the_newest(cache: Cache) -> None:
    versions = list(range(1, 60))
    await asyncio.gather(
        *(cache.set_if_newer("c", str(v).encode(), v, ttl_s=10) for v in reversed(versions))
    )
    assert await cache.get_versioned("c") == (59, b"59")


async def test_counters_add_up_and_expire(cache: Cache) -> None:
    # A lifetime the 50 round trips cannot outlast on a busy machine; expiry on its own key.
    totals = await asyncio.gather(*(cache.incr("n", 2, ttl_s=30) for _ in range(50)))
    assert sorted(totals) == list(range(2, 101, 2))
    assert await cache.incr("brief", 1, ttl_s=0.2) == 1
    await asyncio.sleep(0.35)
    assert await cache.incr("brief", 1, ttl_s=0.2) == 1


async def test_ping(cache: Cache) -> None:
    assert await cache.ping()


async def test_set_many_if_newer_is_set_if_newer_of_each(cache: Cache) -> None:
    await cache.set_if_newer("m1", b"newer", 5, ttl_s=10)
    entries = [("m1", b"older", 3), ("m2", b"two", 2), ("m3", b"three", 7)]
    await cache.set_many_if_newer(entries, ttl_s=10)
    await cache.set_many_if_newer([], ttl_s=10)
    await cache.set_many_if_newer([("m2", b"two, again", 2)], ttl_s=10)
    assert [await cache.get_versioned(k) for k in ("m1", "m2", "m3")] == [
        (5, b"newer"),
        (2, b"two"),
        (7, b"three"),
    ]


@pytest.mark.redis
async def test_set_many_if_newer_after_redis_lost_its_scripts(redis_url: str) -> None:
    cache = RedisCache(redis_url, prefix=f"t{uuid.uuid4().hex}:")
    admin = aioredis.from_url(redis_url)
    try:
        await cache.set_if_newer("s0", b"zero", 1, ttl_s=10)  # the script loaded
        await admin.script_flush()  # as after a restart of Redis
        await cache.set_many_if_newer([("s1", b"one", 1), ("s2", b"two", 2)], ttl_s=10)
        assert await cache.get_versioned("s2") == (2, b"two")
        assert await cache.get_versioned("s1") == (1, b"one")
    finally:
        await cache.close()
        await admin.aclose()
