"""Merchant and API key storage."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import api_keys, merchants


async def insert_merchant(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(merchants.insert(), row)


async def insert_key(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(api_keys.insert(), row)


async def get_merchant(conn: AsyncConnection, merchant_id: str) -> sa.RowMapping | None:
    query = sa.select(merchants).where(merchants.c.id == merchant_id)
    return (await conn.execute(query)).mappings().one_or_none()


async def update_merchant(conn: AsyncConnection, merchant_id: str, values: dict[str, Any]) -> None:
    await conn.execute(merchants.update().where(merchants.c.id == merchant_id).values(**values))


async def list_merchants(conn: AsyncConnection, page: Page) -> list[sa.RowMapping]:
    return await fetch_page(conn, sa.select(merchants), merchants.c.id, page)


async def find_key(conn: AsyncConnection, key_hash: str) -> sa.RowMapping | None:
    query = sa.select(api_keys).where(api_keys.c.key_hash == key_hash)
    return (await conn.execute(query)).mappings().one_or_none()
