"""Deleting what is kept only for a while."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import now_s
from paygate.platform.db.tables import idempotency_keys


async def prune_idempotency_records(conn: AsyncConnection) -> int:
    """Delete idempotency records past their 24 h window; returns how many."""
    result = await conn.execute(
        idempotency_keys.delete().where(idempotency_keys.c.expires_at <= now_s())
    )
    return result.rowcount
