"""GCRA and the daily quota, on both backends, with a clock the test moves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from paygate.edge.gcra import Limiter, MemoryLimiter, Quota, Rate, RedisLimiter
from paygate.platform.cache import RedisCache

DAY_US = 86_400 * 1_000_000


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Make = Callable[[Clock], Limiter]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Limiters of one backend; over Redis they share one server, as API processes do."""
    caches: list[RedisCache] = []
    prefix = f"g{uuid.uuid4().hex[:10]}:"

    def build(clock: Clock) -> Limiter:
        if request.param == "memory":
            return MemoryLimiter(clock)
        cache = RedisCache(request.getfixturevalue("redis_url"), prefix=prefix)
        caches.append(cache)
        return RedisLimiter(cache.script, clock)

    yield build
    for cache in caches:
        await cache.close()


def rate(per_s: float = 10, burst: int = 5, key: str = "k") -> Rate:
    return Rate("requests", key, per_s, burst)


async def test_a_burst_passes_then_one_request_per_interval(make: Make) -> None:
    clock = Clock()
    limiter = make(clock)
    r = rate(per_s=10, burst=5)
    answers = [await limiter.check([r], None) for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 5 + [False]
    assert [a.states[0].remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert answers[5].retry_after_s == pytest.approx(0.1)
    assert answers[5].denied_by == ("requests",)
    clock.now += 0.1  # one interval: one more request
    assert (await limiter.check([r], None)).allowed
    assert not (await limiter.check([r], None)).allowed
    clock.now += 0.5  # the whole burst is earned back, no more
    answers = [await limiter.check([r], None) for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 5 + [False]


async def test_the_state_names_quota_window_remaining_and_reset(make: Make) -> None:
    limiter = make(Clock())
    r = rate(per_s=100, burst=100)
    decision = await limiter.check([r], None)
    (state,) = decision.states
    assert (state.name, state.quota, state.window_s, state.remaining) == ("requests", 100, 1, 99)
    assert state.reset_s == 1  # 10 ms until the bucket is full again, in whole seconds


async def test_a_refusal_consumes_nothing(make: Make) -> None:
    clock = Clock()
    limiter = make(clock)
    wide, narrow = rate(per_s=100, burst=100, key="wide"), rate(per_s=1, burst=2, key="narrow")
    for _ in range(2):
        assert (await limiter.check([wide, narrow], None)).allowed
    refused = await limiter.check([wide, narrow], None)
    assert not refused.allowed and refused.denied_by == ("requests",)
    # The wide limit was not charged for the refused request.
    assert refused.states[0].remaining == 98
    assert (await limiter.check([wide], None)).states[0].remaining == 97


async def test_the_daily_quota_resets_with_the_day(make: Make) -> None:
    clock = Clock(1_800_000_000.0)
    limiter = make(clock)
    day = int(clock.now // 86_400)
    quota = Quota("daily", f"q:{day}", 3, 86_400, (day + 1) * DAY_US)
    answers = [await limiter.check([], quota) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.states[0].remaining for a in answers] == [2, 1, 0, 0]
    ends_in = (day + 1) * 86_400 - clock.now
    assert answers[3].retry_after_s == pytest.approx(ends_in)
    assert answers[3].states[0].reset_s == int(ends_in)
    clock.now = (day + 1) * 86_400 + 1
    tomorrow = Quota("daily", f"q:{day + 1}", 3, 86_400, (day + 2) * DAY_US)
    assert (await limiter.check([], tomorrow)).allowed


async def test_limits_are_per_key(make: Make) -> None:
    limiter = make(Clock())
    assert (await limiter.check([rate(burst=1, key="a")], None)).allowed
    assert not (await limiter.check([rate(burst=1, key="a")], None)).allowed
    assert (await limiter.check([rate(burst=1, key="b")], None)).allowed


@pytest.mark.redis
async def test_limiters_sharing_redis_share_the_limit(redis_url: str) -> None:
    prefix = f"s{uuid.uuid4().hex[:10]}:"
    caches = [RedisCache(redis_url, prefix=prefix) for _ in range(2)]
    try:
        clock = Clock()
        first, second = (RedisLimiter(c.script, clock) for c in caches)
        r = rate(per_s=1, burst=4)
        answers = [await (first, second)[i % 2].check([r], None) for i in range(8)]
        assert sum(a.allowed for a in answers) == 4
        # The server's own clock (no clock given) also works: one process's time for all.
        assert (await RedisLimiter(caches[0].script).check([rate(key="t")], None)).allowed
    finally:
        for c in caches:
            await c.close()
