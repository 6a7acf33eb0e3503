"""All SQL of payments and their transaction log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.payments.attempts import OPEN
from paygate.platform.db import deferred, written
from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import bank_attempts, payments, transaction_log


async def insert(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await deferred.insert(conn, payments, row)


# The reads and the update every payment makes, built once (a statement built per call costs
# SQLAlchemy more CPU than running it: docs/performance.md).
_BY_ID = sa.select(payments).where(payments.c.id == sa.bindparam("match_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
_GET = _BY_ID.where(
    payments.c.merchant_id == sa.bindparam("match_merchant"),
    payments.c.livemode == sa.bindparam("match_livemode"),
)
_GET_LOCKED = _GET.with_for_update()
_MANY = (
    sa.select(payments)
    .where(payments.c.id.in_(sa.bindparam("match_ids", expanding=True)))
    .order_by(payments.c.id)
)
_MANY_LOCKED = _MANY.with_for_update()


async def get(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    payment_id: str,
    *,
    for_update: bool = False,
) -> sa.RowMapping | None:
    """One payment of one merchant in one mode; `for_update` locks the row until commit
    (PostgreSQL; SQLite writers are serialized already)."""
    query = _GET_LOCKED if for_update else _GET
    params = {"match_id": payment_id, "match_merchant": merchant_id, "match_livemode": livemode}
    return (await conn.execute(query, params)).mappings().one_or_none()


# The payment with whether any of its bank attempts is still open, in one statement: a payment
# at a resting status may still move while one is (`Prefer: wait` waits for both).
_GET_WITH_OPEN = _GET.add_columns(
    sa.exists()
    .where(bank_attempts.c.payment_id == payments.c.id, bank_attempts.c.status.in_(OPEN))
    .label("has_open_attempt")
)


async def get_with_open_attempts(
    conn: AsyncConnection, merchant_id: str, livemode: bool, payment_id: str
) -> sa.RowMapping | None:
    """One payment of one merchant in one mode, with `has_open_attempt`: whether a bank attempt
    of it is still open."""
    params = {"match_id": payment_id, "match_merchant": merchant_id, "match_livemode": livemode}
    return (await conn.execute(_GET_WITH_OPEN, params)).mappings().one_or_none()


async def get_by_id(
    conn: AsyncConnection, payment_id: str, *, for_update: bool = False
) -> sa.RowMapping | None:
    query = _BY_ID_LOCKED if for_update else _BY_ID
    return (await conn.execute(query, {"match_id": payment_id})).mappings().one_or_none()


async def get_many(
    conn: AsyncConnection, payment_ids: list[str], *, for_update: bool = False
) -> dict[str, sa.RowMapping]:
    """Payments by id, keyed by id (missing ids are absent). `for_update` locks the rows in id
    order, the order every locker of several payments takes, so that two never deadlock."""
    if not payment_ids:
        return {}
    query = _MANY_LOCKED if for_update else _MANY
    rows = await conn.execute(query, {"match_ids": list(payment_ids)})
    return {row["id"]: row for row in rows.mappings()}


# Its SET clause is taken from each call's parameters.
_UPDATE = payments.update().where(
    payments.c.id == sa.bindparam("match_id"), payments.c.version == sa.bindparam("match_version")
)


async def update(
    conn: AsyncConnection, payment_id: str, version: int, values: dict[str, Any]
) -> bool:
    """Apply `values` if the row is still at `version`; bumps the version. False on a lost race."""
    params = {"updated": now_s(), **values, "version": version + 1}
    params.update(match_id=payment_id, match_version=version)
    result = await conn.execute(_UPDATE, params)
    if result.rowcount != 1:
        return False
    written.record(payment_id, version + 1)
    return True


async def list_page(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    page: Page,
    *,
    status: str | None = None,
    customer: str | None = None,
    created: dict[str, int] | None = None,
) -> list[sa.RowMapping]:
    c = payments.c
    query = sa.select(payments).where(c.merchant_id == merchant_id, c.livemode == livemode)
    # The index whose leading columns the query fixes (ix_payments_merchant_status, else
    # ix_payments_merchant_id), so that it gives the order (see fetch_page).
    prefix = [c.merchant_id, c.livemode]
    if status:
        query = query.where(c.status == status)
        prefix.append(c.status)
    if customer:
        query = query.where(c.customer_id == customer)
    for op, value in (created or {}).items():
        bound = {
            "gt": c.created > value,
            "gte": c.created >= value,
            "lt": c.created < value,
            "lte": c.created <= value,
        }[op]
        query = query.where(bound)
    return await fetch_page(conn, query, c.id, page, prefix=prefix)


async def log(
    conn: AsyncConnection,
    payment_id: str,
    type: str,
    status: str,
    amount: int,
    details: dict[str, Any] | None = None,
) -> None:
    await deferred.insert(
        conn,
        transaction_log,
        dict(
            id=new_id("txl"),
            payment_id=payment_id,
            type=type,
            status=status,
            amount=amount,
            details=details or {},
            created=now_s(),
        ),
    )


async def log_entries(conn: AsyncConnection, payment_id: str) -> list[sa.RowMapping]:
    query = (
        sa.select(transaction_log)
        .where(transaction_log.c.payment_id == payment_id)
        .order_by(transaction_log.c.id)
    )
    return list((await conn.execute(query)).mappings().all())
