"""Keyset pagination on time-ordered ids: newest first, stable under inserts, and as fast on the
millionth row as on the first (no OFFSET)."""

from __future__ import annotations

from collections.abc import Sequence
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
    conn: AsyncConnection,
    query: sa.Select[Any],
    id_column: sa.ColumnElement[Any],
    page: Page,
    *,
    prefix: Sequence[sa.ColumnElement[Any]] = (),
) -> list[sa.RowMapping]:
    """Run `query` for one page: `page.limit + 1` rows newest first, so the caller can tell
    whether more follow.

    `prefix`: columns the query fixes by equality that lead an index ending in the id, e.g.
    `(merchant_id, livemode)` for an index on `(merchant_id, livemode, id)`. Ordering by them as
    well changes nothing in the result, but only that index can give the order: PostgreSQL's
    planner would otherwise walk the primary key and filter on the merchant, which reads most of
    the table for a merchant whose payments are all old."""
    order = [*prefix, id_column]
    if page.ending_before:
        query = query.where(id_column > page.ending_before).order_by(*(c.asc() for c in order))
        rows = (await conn.execute(query.limit(page.limit + 1))).mappings().all()
        return list(reversed(rows))
    if page.starting_after:
        query = query.where(id_column < page.starting_after)
    query = query.order_by(*(c.desc() for c in order)).limit(page.limit + 1)
    return list((await conn.execute(query)).mappings().all())
