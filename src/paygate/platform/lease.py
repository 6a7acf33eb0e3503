"""Leases for jobs that must run in one process at a time (recovery, expiry sweeps, settlement):
a PostgreSQL session advisory lock held on a dedicated connection. If the holder dies, its
connection closes and the lock is free at once; the other processes keep trying.
On SQLite (one process by design) the lease is always granted."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa

from paygate.platform.db import Database


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
    async with db.engine.connect() as conn:
        while not await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))):
            await conn.rollback()  # end the implicit transaction while we wait
            await asyncio.sleep(retry_s)
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            await conn.commit()
