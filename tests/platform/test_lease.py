"""Leases on PostgreSQL: one holder at a time, and lost connections (a database restart, a
network cut) neither end a standby's wait nor fail the holder's way out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from paygate.platform.db import Database
from paygate.platform.lease import lease, run_leased
from tests.platform.conftest import asyncpg_dsn, cut_connections

pytestmark = pytest.mark.postgres


async def _holder_pid(url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        pid: int = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
        return pid
    finally:
        await conn.close()


async def test_a_standby_outlives_a_lost_connection_and_takes_over(own_pg_database: str) -> None:
    holder_db, standby_db = Database(own_pg_database), Database(own_pg_database)
    name = f"job-{uuid.uuid4().hex[:8]}"
    held, release, taken = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with lease(holder_db, name, retry_s=0.05):
            held.set()
            await release.wait()

    async def standby() -> None:
        async with lease(standby_db, name, retry_s=0.05):
            taken.set()

    try:
        first = asyncio.create_task(holder())
        await asyncio.wait_for(held.wait(), 10)
        second = asyncio.create_task(standby())
        await asyncio.sleep(0.3)  # waiting, on its own connection
        assert not taken.is_set()

        assert await cut_connections(own_pg_database, keep=await _holder_pid(own_pg_database)) >= 1
        await asyncio.sleep(0.5)
        assert not second.done(), "the standby's wait ended with its connection"
        assert not taken.is_set(), "two holders at once"

        release.set()
        await asyncio.wait_for(taken.wait(), 10)
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        await holder_db.dispose()
        await standby_db.dispose()


async def test_the_holder_leaves_cleanly_after_its_connection_was_lost(
    own_pg_database: str,
) -> None:
    db = Database(own_pg_database)
    name = f"job-{uuid.uuid4().hex[:8]}"
    try:
        async with lease(db, name, retry_s=0.05):
            assert await cut_connections(own_pg_database) >= 1
        # The lock went with the connection: the next holder gets it at once.
        async with asyncio.timeout(5), lease(db, name, retry_s=0.05):
            pass
    finally:
        await db.dispose()


async def test_a_holder_that_loses_its_lease_stops_its_job_until_it_has_it_again(
    own_pg_database: str,
) -> None:
    """A cut connection frees the lock while the holder's job still runs: the standby takes
    over, and the old holder stops its job within a check interval, so the two do not go on
    together; the old holder then waits as the new standby."""
    first_db, second_db = Database(own_pg_database), Database(own_pg_database)
    name = f"job-{uuid.uuid4().hex[:8]}"
    running = {"first": False, "second": False}
    overlap_s = 0.0

    def job(who: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            running[who] = True
            try:
                await asyncio.Event().wait()  # runs until stopped
            finally:
                running[who] = False

        return run

    async def watch_overlap() -> None:
        nonlocal overlap_s
        while True:
            await asyncio.sleep(0.01)
            if running["first"] and running["second"]:
                overlap_s += 0.01

    tasks = [asyncio.create_task(watch_overlap())]
    try:
        tasks.append(
            # After losing the lease it waits 0.5 s before trying again: the standby, trying
            # every 0.05 s, takes it first (without the wait, under load the old holder could
            # win it back, and the standby never take over).
            asyncio.create_task(run_leased(first_db, name, job("first"), retry_s=0.5, check_s=0.1))
        )
        await _until(lambda: running["first"])
        tasks.append(
            asyncio.create_task(
                run_leased(second_db, name, job("second"), retry_s=0.05, check_s=0.1)
            )
        )
        await asyncio.sleep(0.3)
        assert not running["second"], "two holders at once"

        await _terminate(own_pg_database, await _holder_pid(own_pg_database))
        await _until(lambda: running["second"] and not running["first"])
        await asyncio.sleep(0.5)
        assert running["second"] and not running["first"]
        assert overlap_s <= 0.5, f"both jobs ran for {overlap_s:.2f} s"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await first_db.dispose()
        await second_db.dispose()


async def test_a_leased_job_that_returns_or_raises_ends_the_hold(own_pg_database: str) -> None:
    db = Database(own_pg_database)
    name = f"job-{uuid.uuid4().hex[:8]}"
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    async def broken() -> None:
        raise RuntimeError("bug")

    try:
        await asyncio.wait_for(run_leased(db, name, once, retry_s=0.05), 10)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(run_leased(db, name, broken, retry_s=0.05), 10)
        # The lock was released both times.
        await asyncio.wait_for(run_leased(db, name, once, retry_s=0.05), 10)
        assert calls == 2
    finally:
        await db.dispose()


async def _terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)
