"""Cached status reads: the exact bytes from the cache, ETag and If-None-Match, and never an old
state after a newer commit, on both databases and both cache backends."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import sqlalchemy as sa

from paygate.edge import cache
from paygate.payments import repository
from paygate.platform.db import written
from paygate.platform.db.tables import payments
from paygate.runtime import Runtime, read_cache_enabled
from tests.conftest import make_settings
from tests.edge.conftest import Api, Serve
from tests.support import statements


def delta(before: cache.ReadStats) -> dict[str, int]:
    now = cache.STATS
    return {k: getattr(now, k) - getattr(before, k) for k in ("hits", "misses", "fills")}


def snapshot() -> cache.ReadStats:
    return cache.ReadStats(**vars(cache.STATS))


async def bump(rt: Runtime, payment_id: str, step: int) -> int:
    """Commit a new version of the payment (as any writer does), then invalidate."""
    async with rt.db.transaction() as conn:
        version = await conn.scalar(
            sa.select(payments.c.version).where(payments.c.id == payment_id)
        )
        await conn.execute(
            payments.update()
            .where(payments.c.id == payment_id)
            .values(description=f"step {step}", version=version + 1)
        )
    await cache.invalidate(rt, payment_id)
    return int(version) + 1


def version_of(r: Any) -> int:
    return int(r.headers["etag"].strip('"').split(".")[0])


async def test_a_second_read_is_served_from_the_cache(api: Api) -> None:
    _, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    before = snapshot()
    first = await api.client.get(url, headers=auth)
    second = await api.client.get(url, headers=auth)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and first.json() == payment
    assert delta(before) == {"hits": 1, "misses": 1, "fills": 1}
    assert 0 < cache.STATS.hit_rate <= 1
    assert first.headers["etag"] == second.headers["etag"] == '"1.2026-01-01"'
    assert first.headers["cache-control"] == "private, no-cache"


async def test_if_none_match_answers_304_until_the_object_changes(sqlite_api: Api) -> None:
    _, auth = await sqlite_api.merchant()
    payment = await sqlite_api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    etag = (await sqlite_api.client.get(url, headers=auth)).headers["etag"]
    for header in (etag, f"W/{etag}", f'"0.x", {etag}', "*"):
        r = await sqlite_api.client.get(url, headers={**auth, "If-None-Match": header})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag
    r = await sqlite_api.client.get(url, headers={**auth, "If-None-Match": '"0.2026-01-01"'})
    assert r.status_code == 200
    canceled = await sqlite_api.client.post(f"{url}/cancel", headers=auth)
    assert canceled.json()["status"] == "canceled"
    r = await sqlite_api.client.get(url, headers={**auth, "If-None-Match": etag})
    assert r.status_code == 200 and r.json() == canceled.json()
    assert r.headers["etag"] == '"2.2026-01-01"'
    # The representation differs per API version: so does the ETag.
    newer = await sqlite_api.client.get(url, headers={**auth, "Paygate-Version": "2026-11-01"})
    assert newer.headers["etag"] == '"2.2026-11-01"'


async def test_refunds_are_cached_and_a_refund_invalidates_its_payment(api: Api) -> None:
    _, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    async with api.runtime.db.transaction() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == payment["id"])
            .values(status="succeeded", amount_captured=payments.c.amount, version=2)
        )
    await cache.invalidate(api.runtime, payment["id"])
    assert version_of(await api.client.get(url, headers=auth)) == 2
    refund = await api.client.post(
        "/v1/refunds",
        json={"payment": payment["id"], "amount": 500},
        headers={**auth, "Idempotency-Key": "r1"},
    )
    assert refund.status_code == 202
    # The refund reserved its amount: a new version of the payment, not the cached one.
    assert version_of(await api.client.get(url, headers=auth)) == 3
    refund_url = f"/v1/refunds/{refund.json()['id']}"
    got = [await api.client.get(refund_url, headers=auth) for _ in range(2)]
    assert got[0].content == got[1].content and got[0].json() == refund.json()
    assert got[1].headers["etag"] == '"1.2026-01-01"'


async def test_another_merchant_never_gets_a_cached_object(sqlite_api: Api) -> None:
    _, auth = await sqlite_api.merchant()
    _, other = await sqlite_api.merchant(name="Other")
    payment = await sqlite_api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    assert (await sqlite_api.client.get(url, headers=auth)).status_code == 200  # cached now
    r = await sqlite_api.client.get(url, headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "resource_missing"


async def test_a_slow_reader_cannot_put_an_old_state_back(api: Api) -> None:
    merchant, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    rt = api.runtime
    stale = (await api.client.get(url, headers=auth)).content  # version 1, as a reader saw it
    await bump(rt, payment["id"], 1)
    # The slow reader read version 1 before the commit and fills only now: refused.
    assert not await cache.fill(rt, merchant["id"], False, payment["id"], 1, stale)
    r = await api.client.get(url, headers=auth)
    assert version_of(r) == 2 and r.json()["description"] == "step 1"
    # The reader after the commit filled version 2; a version-1 fill is still refused.
    assert not await cache.fill(rt, merchant["id"], False, payment["id"], 1, stale)
    assert (await api.client.get(url, headers=auth)).json()["description"] == "step 1"


async def _waiting_on_a_commit(
    api: Api,
) -> tuple[str, str, dict[str, str], asyncio.Task[None]]:
    """A payment whose read is cached, a request waiting on it, and a commit of its version 2
    that nobody has signalled yet: (its id, its URL, the merchant's auth, the waiting task)."""
    _, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    await api.client.get(url, headers=auth)
    waiting = asyncio.create_task(api.runtime.wait_change(payment["id"], 5))
    await asyncio.sleep(0)
    async with api.runtime.db.transaction() as conn:
        await conn.execute(
            payments.update().where(payments.c.id == payment["id"]).values(version=2)
        )
    return payment["id"], url, auth, waiting


async def test_a_change_signalled_by_a_worker_invalidates_before_waiters_wake(
    sqlite_api: Api,
) -> None:
    # The processor calls `rt.changed(id)` after its commits; a request waiting on the payment
    # (`Prefer: wait`) answers only once the cached read is dropped.
    api = sqlite_api
    payment_id, url, auth, waiting = await _waiting_on_a_commit(api)
    api.runtime.changed(payment_id, "att_ignored")
    await waiting
    assert version_of(await api.client.get(url, headers=auth)) == 2


async def test_a_change_that_is_no_news_invalidates_and_wakes_no_waiter(
    sqlite_api: Api,
) -> None:
    # The processor moving a payment to `processing` (`rt.changed(id, news=False)`): the cached
    # read is dropped, and a request waiting on the payment keeps waiting for the bank's answer.
    api = sqlite_api
    payment_id, url, auth, waiting = await _waiting_on_a_commit(api)
    api.runtime.changed(payment_id, news=False)
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert version_of(await api.client.get(url, headers=auth)) == 2
    api.runtime.changed(payment_id)
    await asyncio.wait_for(waiting, 1)


async def no_older_state_after_an_invalidation(api: Api) -> None:
    """Readers race a writer; every read that started after an invalidation answers at least
    the version invalidated."""
    _, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    loop = asyncio.get_running_loop()
    committed: list[tuple[float, int]] = []  # (when invalidated, version)
    reads: list[tuple[float, int]] = []  # (when the read started, version answered)
    done = asyncio.Event()

    async def writer() -> None:
        for step in range(5):
            await asyncio.sleep(random.uniform(0, 0.01))
            version = await bump(api.runtime, payment["id"], step)
            committed.append((loop.time(), version))
        done.set()

    async def reader() -> None:
        while not done.is_set():
            started = loop.time()
            r = await api.client.get(url, headers=auth)
            assert r.status_code == 200
            reads.append((started, version_of(r)))
            # Served from memory, a read may never suspend: let the writer run.
            await asyncio.sleep(0)

    hits = cache.STATS.hits
    await asyncio.gather(writer(), *(reader() for _ in range(3)))
    assert len(reads) > 10 and cache.STATS.hits > hits
    for started, seen in reads:
        newest = max((v for t, v in committed if t <= started), default=1)
        assert seen >= newest, (started, seen, newest)


# `unlimited`: readers as fast as they go would hit the standard tier's limit.
async def test_no_read_after_an_invalidation_answers_an_older_state(serve_sqlite: Serve) -> None:
    async with serve_sqlite(read_cache="on", default_tier="unlimited") as api:
        await no_older_state_after_an_invalidation(api)


@pytest.mark.redis
async def test_no_read_after_an_invalidation_answers_an_older_state_over_redis(
    serve_with: Serve, redis_url: str
) -> None:
    async with serve_with(redis_url=redis_url, default_tier="unlimited") as api:
        await no_older_state_after_an_invalidation(api)


@pytest.mark.redis
async def test_instances_sharing_redis_see_each_others_changes(
    serve_with: Serve, redis_url: str
) -> None:
    async with serve_with(redis_url=redis_url) as first, serve_with(redis_url=redis_url) as second:
        assert first.runtime.read_cache and second.runtime.read_cache  # auto: on with Redis
        _, auth = await first.merchant()
        payment = await first.payment(auth)
        url = f"/v1/payments/{payment['id']}"
        assert (await first.client.get(url, headers=auth)).json()["status"] == "pending"
        await second.client.post(f"{url}/cancel", headers=auth)
        assert (await first.client.get(url, headers=auth)).json()["status"] == "canceled"


def test_the_cache_is_used_only_where_every_writer_invalidates_it(tmp_path: Any) -> None:
    def enabled(embedded: bool = False, **extra: Any) -> bool:
        return read_cache_enabled(make_settings(tmp_path, "sqlite://", **extra), embedded=embedded)

    assert not enabled()  # `paygate api` processes, each with a memory cache of its own
    assert enabled(embedded=True)  # `paygate serve`: one process
    assert enabled(redis_url="redis://cache:6379/0")
    assert enabled(read_cache="on") and not enabled(embedded=True, read_cache="off")


async def test_a_floor_at_the_version_written_needs_no_read(api: Api) -> None:
    # A writer that recorded the versions it committed (the processor) sets the floors without
    # reading them back; a slow reader still cannot put the older state back.
    merchant, auth = await api.merchant()
    payment = await api.payment(auth)
    url = f"/v1/payments/{payment['id']}"
    rt = api.runtime
    stale = (await api.client.get(url, headers=auth)).content
    with written.versions() as versions:
        async with rt.db.transaction() as conn:
            row = await repository.get_by_id(conn, payment["id"])
            assert row is not None
            assert await repository.update(conn, row["id"], row["version"], {"description": "x"})
    assert versions == {payment["id"]: 2}
    with statements(rt.db) as seen:
        await cache.invalidate(rt, payment["id"], versions=versions)
    assert seen == []
    assert not await cache.fill(rt, merchant["id"], False, payment["id"], 1, stale)
    r = await api.client.get(url, headers=auth)
    assert version_of(r) == 2 and r.json()["description"] == "x"
