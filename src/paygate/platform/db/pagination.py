"""Keyset pagination on time-ordered ids: newest first, stable under inserts, and as fast on the
millionth row as on the first (no OFFSET)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class Page:
    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None


async def fetch_page(
    conn: AsyncConnection, query: sa.Select[Any], id_column: sa.ColumnElement[Any], page: Page
) -> list[sa.RowMapping]:
    """Run `query` for one page: `page.limit + 1` rows newest first, so the caller can tell
    whether more follow."""
    if page.ending_before:
        query = query.where(id_column > page.ending_before).order_by(id_column.asc())
        rows = (await conn.execute(query.limit(page.limit + 1))).mappings().all()
        return list(reversed(rows))
    if page.starting_after:
        query = query.where(id_column < page.starting_after)
    query = query.order_by(id_column.desc()).limit(page.limit + 1)
    return list((await conn.execute(query)).mappings().all())
