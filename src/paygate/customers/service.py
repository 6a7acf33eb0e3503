"""Customers: created or reused (by e-mail) from a payment's optional `customer` object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import InvalidRequest, NotFound
from paygate.ids import new_id, now_s
from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import customers


def render(c: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "object": "customer",
        "livemode": c["livemode"],
        "email": c["email"],
        "name": c["name"],
        "created": c["created"],
    }


async def create(
    conn: AsyncConnection, merchant_id: str, livemode: bool, *, email: str | None, name: str | None
) -> dict[str, Any]:
    row = {
        "id": new_id("cus"),
        "merchant_id": merchant_id,
        "livemode": livemode,
        "email": email,
        "name": name,
        "created": now_s(),
    }
    await conn.execute(customers.insert(), row)
    return render(row)


async def resolve(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    *,
    id: str | None,
    email: str | None,
    name: str | None,
) -> str:
    """The id of the named customer, of the merchant's customer with this e-mail, or of a new
    one."""
    c = customers.c
    scope = (c.merchant_id == merchant_id, c.livemode == livemode)
    if id is not None:
        found = await conn.scalar(sa.select(c.id).where(c.id == id, *scope))
        if found is None:
            raise InvalidRequest("No such customer.", param="customer.id", code="resource_missing")
        return str(found)
    if email is not None:
        found = await conn.scalar(
            sa.select(c.id).where(c.email == email, *scope).order_by(c.id).limit(1)
        )
        if found is not None:
            return str(found)
    return str((await create(conn, merchant_id, livemode, email=email, name=name))["id"])


async def get(
    conn: AsyncConnection, merchant_id: str, livemode: bool, customer_id: str
) -> dict[str, Any]:
    c = customers.c
    row = (
        (
            await conn.execute(
                sa.select(customers).where(
                    c.id == customer_id, c.merchant_id == merchant_id, c.livemode == livemode
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("No such customer.", param="id")
    return render(row)


async def list_page(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page, *, email: str | None
) -> list[dict[str, Any]]:
    c = customers.c
    query = sa.select(customers).where(c.merchant_id == merchant_id, c.livemode == livemode)
    if email:  # ix_customers_merchant_email finds them; a page sorts that email's few rows
        query = query.where(c.email == email)
        return [render(r) for r in await fetch_page(conn, query, c.id, page)]
    prefix = [c.merchant_id, c.livemode]  # ix_customers_merchant_id gives the order (fetch_page)
    return [render(r) for r in await fetch_page(conn, query, c.id, page, prefix=prefix)]
