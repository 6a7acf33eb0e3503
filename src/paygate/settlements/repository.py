"""All SQL of settlements."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ledger.tables import balance_transactions
from paygate.platform.db.pagination import Page, fetch_page
from paygate.settlements.tables import settlements

# What a settlement covers: money in and out of the merchant's balance; payouts are settlements'
# own transactions.
_SETTLED_TYPES = ("charge", "refund")


def _unsettled(cutoff: int) -> sa.ColumnElement[bool]:
    b = balance_transactions.c
    return sa.and_(
        b.status == "available",
        b.settlement_id.is_(None),
        b.available_on <= cutoff,
        b.type.in_(_SETTLED_TYPES),
    )


async def scopes(conn: AsyncConnection, cutoff: int) -> list[tuple[str, bool, str]]:
    """(merchant, livemode, currency) of every scope with something to settle by `cutoff`."""
    b = balance_transactions.c
    query = (
        sa.select(b.merchant_id, b.livemode, b.currency)
        .where(_unsettled(cutoff))
        .distinct()
        .order_by(b.merchant_id, b.livemode, b.currency)
    )
    return [(r.merchant_id, bool(r.livemode), r.currency) for r in await conn.execute(query)]


async def unsettled(
    conn: AsyncConnection, merchant_id: str, livemode: bool, currency: str, cutoff: int
) -> list[sa.RowMapping]:
    b = balance_transactions.c
    query = (
        sa.select(balance_transactions)
        .where(
            b.merchant_id == merchant_id,
            b.livemode == livemode,
            b.currency == currency,
            _unsettled(cutoff),
        )
        .order_by(b.id)
    )
    return list((await conn.execute(query)).mappings().all())


async def claim(conn: AsyncConnection, settlement_id: str, txn_ids: list[str]) -> int:
    """Mark the transactions as covered by the settlement; returns how many were still free."""
    b = balance_transactions.c
    claimed = 0
    for start in range(0, len(txn_ids), 500):
        result = await conn.execute(
            balance_transactions.update()
            .where(b.id.in_(txn_ids[start : start + 500]), b.settlement_id.is_(None))
            .values(settlement_id=settlement_id)
        )
        claimed += result.rowcount
    return claimed


async def covered(conn: AsyncConnection, settlement_id: str) -> list[str]:
    b = balance_transactions.c
    query = (
        sa.select(b.id)
        .where(b.settlement_id == settlement_id, b.type.in_(_SETTLED_TYPES))
        .order_by(b.id)
    )
    return list((await conn.scalars(query)).all())


async def find(
    conn: AsyncConnection, merchant_id: str, livemode: bool, currency: str, date: str
) -> sa.RowMapping | None:
    s = settlements.c
    query = sa.select(settlements).where(
        s.merchant_id == merchant_id, s.livemode == livemode, s.currency == currency, s.date == date
    )
    return (await conn.execute(query)).mappings().one_or_none()


async def insert(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(settlements.insert(), row)


async def get(conn: AsyncConnection, settlement_id: str) -> sa.RowMapping | None:
    query = sa.select(settlements).where(settlements.c.id == settlement_id)
    return (await conn.execute(query)).mappings().one_or_none()


async def of_date(conn: AsyncConnection, date: str) -> list[sa.RowMapping]:
    s = settlements.c
    query = sa.select(settlements).where(s.date == date).order_by(s.id)
    return list((await conn.execute(query)).mappings().all())


async def page(
    conn: AsyncConnection,
    page: Page,
    *,
    merchant_id: str | None,
    livemode: bool | None,
    date: str | None = None,
    status: str | None = None,
) -> list[sa.RowMapping]:
    s = settlements.c
    query = sa.select(settlements)
    if merchant_id is not None:
        query = query.where(s.merchant_id == merchant_id)
    if livemode is not None:
        query = query.where(s.livemode == livemode)
    if date is not None:
        query = query.where(s.date == date)
    if status is not None:
        query = query.where(s.status == status)
    return await fetch_page(conn, query, s.id, page)
