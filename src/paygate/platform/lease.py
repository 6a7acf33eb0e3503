"""Leases for jobs that must run in one process at a time (recovery, expiry sweeps, settlement):
a PostgreSQL session advisory lock held on a dedicated connection. If the holder dies, its
connection closes and the lock is free at once; the other processes keep trying, through
database restarts too. On SQLite (one process by design) the lease is always granted.

A holder can lose its lease without dying: a database restart or a network cut closes its
connection, which frees the lock for a standby while the holder's job still runs. `run_leased`
watches the connection and stops the job when that happens, then waits for the lease again, so
two holders overlap for at most one check interval."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.platform.db import Database
from paygate.platform.logging import log


def lease_id(name: str) -> int:
    digest = hashlib.blake2b(f"paygate-lease:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def lease(db: Database, name: str, *, retry_s: float = 2.0) -> AsyncIterator[None]:
    """Wait until this process holds the lease `name`, then hold it for the block."""
    if db.is_sqlite:
        yield
        return
    key = lease_id(name)
    conn = await _acquire(db, name, key, retry_s)
    try:
        yield
    finally:
        # A lost connection has released the lock already: nothing to undo then.
        with contextlib.suppress(Exception):
            await conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            await conn.commit()
        with contextlib.suppress(Exception):
            await conn.close()


async def run_leased(
    db: Database,
    name: str,
    job: Callable[[], Awaitable[object]],
    *,
    retry_s: float = 2.0,
    check_s: float = 2.0,
) -> None:
    """Run `job()` while this process holds the lease `name`; when the lease is lost, cancel
    the job, wait `retry_s`, and start it again once the lease is back. Returns when the job
    returns."""
    if db.is_sqlite:
        await job()
        return
    key = lease_id(name)
    while True:
        conn = await _acquire(db, name, key, retry_s)
        task = asyncio.ensure_future(job())
        try:
            lost = await _watch(conn, task, check_s)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            with contextlib.suppress(Exception):
                await conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                await conn.commit()
            with contextlib.suppress(Exception):
                await conn.close()
        if not lost:
            task.result()  # the job's own exception, if it raised
            return
        log.warning("lease.lost", lease=name)
        # A holder whose connection was cut lets a standby, already trying, take the lease
        # first, rather than racing it back at once.
        await asyncio.sleep(retry_s)


async def _watch(conn: AsyncConnection, task: asyncio.Future[object], check_s: float) -> bool:
    """Wait for `task`, checking every `check_s` that the connection holding the lock is
    alive. True when it is not: the lock went with it."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=check_s)
        if done:
            return False
        try:
            await conn.scalar(sa.select(1))
            await conn.rollback()
        except (sa.exc.DBAPIError, OSError):
            return True


async def _acquire(db: Database, name: str, key: int, retry_s: float) -> AsyncConnection:
    """A connection holding the lock. A standby waits here for as long as the holder lives,
    which can outlast a database restart: a lost connection is replaced, not raised, or the
    standby's job would end for good while its process still looks healthy."""
    while True:
        conn: AsyncConnection | None = None
        try:
            conn = await db.engine.connect()
            while not await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))):
                await conn.rollback()  # end the implicit transaction while we wait
                await asyncio.sleep(retry_s)
            await conn.commit()
            return conn
        except BaseException as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            if not isinstance(exc, sa.exc.DBAPIError | OSError):
                raise  # cancelled (the process stops), or a bug
            log.warning("lease.wait_failed", lease=name, error=f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(retry_s)
