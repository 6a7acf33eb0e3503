"""Leases on PostgreSQL: one holder at a time, and lost connections (a database restart, a
network cut) neither end a standby's wait nor fail the holder's way out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from paygate.platform.db import Database
from paygate.platform.lease import lease

pytestmark = pytest.mark.postgres


@pytest.fixture
async def lease_db(postgres_server: str) -> AsyncIterator[str]:
    """A database of its own, so that cutting its connections touches nothing else."""
    name = f"lease_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f"CREATE DATABASE {name}")
    base, _, query = postgres_server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _cut_connections(url: str, *, keep: int | None = None) -> int:
    """Terminate every session of the database but ours (and `keep`): what a restart does to
    them. Returns how many were cut."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        cut: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND pid IS DISTINCT FROM $1",
            keep,
        )
        return cut
    finally:
        await conn.close()


async def _holder_pid(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        pid: int = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
        return pid
    finally:
        await conn.close()


async def test_a_standby_outlives_a_lost_connection_and_takes_over(lease_db: str) -> None:
    holder_db, standby_db = Database(lease_db), Database(lease_db)
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

        assert await _cut_connections(lease_db, keep=await _holder_pid(lease_db)) >= 1
        await asyncio.sleep(0.5)
        assert not second.done(), "the standby's wait ended with its connection"
        assert not taken.is_set(), "two holders at once"

        release.set()
        await asyncio.wait_for(taken.wait(), 10)
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        await holder_db.dispose()
        await standby_db.dispose()


async def test_the_holder_leaves_cleanly_after_its_connection_was_lost(lease_db: str) -> None:
    db = Database(lease_db)
    name = f"job-{uuid.uuid4().hex[:8]}"
    try:
        async with lease(db, name, retry_s=0.05):
            assert await _cut_connections(lease_db) >= 1
        # The lock went with the connection: the next holder gets it at once.
        async with asyncio.timeout(5), lease(db, name, retry_s=0.05):
            pass
    finally:
        await db.dispose()
