"""One contract for both counter stores: memory and a real Redis. The property: however the
deliveries of a set of payments interleave (redeliveries, concurrent deliveries), each payment
is counted exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygate.fraud.counters import (
    CounterStore,
    MemoryCounterStore,
    RedisCounterStore,
    bucket_keys,
    counter_store_from_url,
)
from paygate.fraud.features import FeatureConfig, OnlineFeatures, Txn

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


def _factory(request: pytest.FixtureRequest) -> Callable[[], CounterStore]:
    if request.param == "memory":
        return MemoryCounterStore
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisCounterStore(url, prefix=f"t{uuid.uuid4().hex}:")


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest) -> Callable[[], CounterStore]:
    return _factory(request)


@pytest.fixture
async def store(make_store: Callable[[], CounterStore]) -> AsyncIterator[CounterStore]:
    s = make_store()
    yield s
    await s.close()  # type: ignore[attr-defined]


async def test_missing_keys_read_zero_and_increments_add_up(store: CounterStore) -> None:
    assert await store.get_many(["a", "b"]) == [0, 0]
    assert await store.get_many([]) == []
    await store.incr_many([("a", 2), ("b", 5), ("a", 3)], ttl_s=60)
    await store.incr_many([("b", 10_000_000_000)], ttl_s=60)  # amounts beyond 32 bits
    assert await store.get_many(["a", "b", "c"]) == [5, 10_000_000_005, 0]


async def test_thousands_of_keys_read_and_add_in_their_order(store: CounterStore) -> None:
    """More keys than one MGET of the script takes (it reads in slices of 1,000), a key twice
    in one increment, and names with the characters ids and fingerprints use."""
    names = [f"fraud:card:fp_{i:x}-A_z.{i}:n:h{i}" for i in range(2_500)]
    await store.incr_many([(name, i + 1) for i, name in enumerate(names)], ttl_s=60)
    await store.incr_many([(names[7], 10), (names[7], 100)], ttl_s=60)
    wanted = [*reversed(names), "missing", names[7]]
    expected = [i + 1 for i in reversed(range(2_500))]
    expected[-8] += 110
    assert await store.get_many(wanted) == [*expected, 0, 118]


async def test_read_and_count_reads_first_then_counts_each_new_mark_once(
    store: CounterStore,
) -> None:
    await store.incr_many([("a", 5)], ttl_s=60)
    assert await store.add_once("seen:old", ttl_s=60)
    values, firsts = await store.read_and_count(
        ["a", "b", "missing"],
        [
            ("seen:1", [("a", 1), ("b", 10)]),
            ("seen:old", [("a", 100)]),  # counted before: its increments are not added
            ("seen:1", [("a", 1_000)]),  # twice in one call: the second is not new
            ("seen:2", []),
            ("seen:3", [("b", 10_000_000_000)]),  # beyond 32 bits
        ],
        ttl_s=60,
        mark_ttl_s=60,
    )
    assert values == [5, 0, 0]  # as they were before the call
    assert firsts == [True, False, False, True, True]
    assert await store.get_many(["a", "b"]) == [6, 10_000_000_010]
    assert await store.read_and_count([], [], ttl_s=60, mark_ttl_s=60) == ([], [])


async def test_read_and_count_marks_expire_on_their_own_time(store: CounterStore) -> None:
    _, firsts = await store.read_and_count([], [("seen:1", [("a", 1)])], ttl_s=60, mark_ttl_s=1)
    await asyncio.sleep(1.3)
    values, again = await store.read_and_count(
        ["a"], [("seen:1", [("a", 1)])], ttl_s=60, mark_ttl_s=1
    )
    assert (firsts, values, again) == ([True], [1], [True])
    assert await store.get_many(["a"]) == [2]


@pytest.mark.redis
async def test_a_key_that_would_split_is_refused(redis_url: str) -> None:
    """The scripts take the key names joined by newlines: a name holding one, or an empty one,
    is refused before anything is counted."""
    store = RedisCounterStore(redis_url, prefix=f"t{uuid.uuid4().hex}:")
    try:
        for bad in (["a\nb"], ["a", ""]):
            with pytest.raises(ValueError, match="newline"):
                await store.incr_many([(name, 1) for name in bad], ttl_s=60)
            with pytest.raises(ValueError, match="newline"):
                await store.get_many(bad)
            with pytest.raises(ValueError, match="newline"):
                await store.read_and_count([], [(bad[-1], [("a", 1)])], ttl_s=60, mark_ttl_s=60)
            with pytest.raises(ValueError, match="newline"):
                await store.read_and_count([], [("m", [(bad[-1], 1)])], ttl_s=60, mark_ttl_s=60)
        assert await store.get_many(["a", "b", "a\tb"]) == [0, 0, 0]
    finally:
        await store.close()


async def test_keys_expire_after_their_last_increment(store: CounterStore) -> None:
    await store.incr_many([("gone", 1)], ttl_s=1)
    assert await store.add_once("mark", ttl_s=1)
    await asyncio.sleep(1.3)
    assert await store.get_many(["gone"]) == [0]
    assert await store.add_once("mark", ttl_s=1)  # the mark expired with its time


async def test_add_once_under_concurrency_has_one_winner(store: CounterStore) -> None:
    wins = await asyncio.gather(*(store.add_once("seen:pay_1", ttl_s=60) for _ in range(40)))
    assert wins.count(True) == 1


def test_the_backend_follows_the_redis_setting() -> None:
    assert isinstance(counter_store_from_url(None), MemoryCounterStore)
    assert counter_store_from_url("redis://127.0.0.1:1/0").backend == "redis"


CONFIG = FeatureConfig()
HOUR = 1_700_000_000 // 3600 * 3600
# The properties below run each example on a store of its own, inside one test's fixtures.
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY
@given(
    deliveries=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4)), min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
    batch=st.integers(1, 6),
)
def test_each_payment_counts_once_whatever_the_redeliveries(
    request: pytest.FixtureRequest,
    backend: str,
    deliveries: list[tuple[int, int]],
    order: object,
    batch: int,
) -> None:
    """`deliveries`: (payment number, how many times its event arrives); the arrivals are
    shuffled and applied `batch` at a time concurrently."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    payments = {n: 100 * (n + 1) for n, _ in deliveries}
    arrivals = [n for n, times in deliveries for _ in range(times)]
    order.shuffle(arrivals)  # type: ignore[attr-defined]

    async def run() -> tuple[list[int], list[int]]:
        store: CounterStore = (
            RedisCounterStore(url, prefix=f"p{uuid.uuid4().hex}:") if url else MemoryCounterStore()
        )
        online = OnlineFeatures(store, CONFIG)

        def txn(n: int) -> Txn:
            return Txn(f"pay_{n}", "card_1", "mer_1", float(HOUR + n), payments[n])

        for start in range(0, len(arrivals), batch):
            await asyncio.gather(*(online.observe(txn(n)) for n in arrivals[start : start + batch]))
        n_keys = bucket_keys("fraud:card:card_1:n", HOUR // 3600)
        s_keys = bucket_keys("fraud:card:card_1:s", HOUR // 3600)
        counts, sums = await store.get_many(n_keys), await store.get_many(s_keys)
        await store.close()  # type: ignore[attr-defined]
        return counts, sums

    counts, sums = asyncio.run(run())
    assert counts == [len(payments)] * 3
    assert sums == [sum(payments.values()) * 100] * 3  # amounts in 1/10,000 of the unit


PAYMENT = st.tuples(
    st.integers(0, 2),  # card
    st.integers(0, 1),  # terminal
    st.sampled_from([0, 1, 5, 30, 24 * 3, 24 * 9, 24 * 10 + 3]),  # hours before the last
    st.integers(1, 50_000),  # amount in minor units
)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY
@given(
    payments=st.lists(PAYMENT, min_size=1, max_size=6),
    arrivals=st.lists(st.integers(0, 5), min_size=1, max_size=14),
    batch=st.integers(1, 8),
)
def test_a_batch_observed_at_once_is_observed_one_by_one(
    request: pytest.FixtureRequest,
    backend: str,
    payments: list[tuple[int, int, int, int]],
    arrivals: list[int],
    batch: int,
) -> None:
    """`observe_many` of each batch of the arrivals (redeliveries among them, and a payment twice
    in one batch) gives the rows, and leaves the counters, of `observe` one arrival at a time."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    last = float(HOUR + 40 * 86_400)

    def txn(n: int) -> Txn:
        card, terminal, hours_before, amount = payments[n % len(payments)]
        at = last - hours_before * 3600 - n  # payment n's own second: a redelivery is the same
        return Txn(f"pay_{n}", f"card_{card}", f"mer_{terminal}", at, amount)

    def store() -> CounterStore:
        return (
            RedisCounterStore(url, prefix=f"b{uuid.uuid4().hex}:") if url else MemoryCounterStore()
        )

    async def run() -> None:
        one, many = OnlineFeatures(store(), CONFIG), OnlineFeatures(store(), CONFIG)
        alone = [await one.observe(txn(n)) for n in arrivals]
        together = [
            row
            for start in range(0, len(arrivals), batch)
            for row in await many.observe_many([txn(n) for n in arrivals[start : start + batch]])
        ]
        np.testing.assert_array_equal(np.array(alone), np.array(together))
        keys = sorted(
            {k for n in arrivals for keys in one._windows(txn(n)) for k in keys}
            | {k for n in arrivals for k, _ in one._counts(txn(n))}
        )
        assert await one.store.get_many(keys) == await many.store.get_many(keys)
        for online in (one, many):
            await online.store.close()  # type: ignore[attr-defined]

    asyncio.run(run())
