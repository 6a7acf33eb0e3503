"""Bank attempts: all SQL of the `bank_attempts` table, and the back-off schedules."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.platform.db import deferred
from paygate.platform.db.tables import bank_attempts

OPEN = ("pending", "unknown")

# Unknown outcomes are looked up at once, then after 5 minutes, an hour, and daily (the way
# payment platforms' janitors re-check); a bank that answered "unavailable" is tried again soon.
UNKNOWN_BACKOFF_S = (0.0, 300.0, 3600.0, 86400.0)
UNAVAILABLE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 300.0)
# A fresh attempt belongs to the handler that created it for this long before recovery may
# take it over.
LEASE_S = 30.0


def backoff(schedule: tuple[float, ...], tries: int, scale: float) -> float:
    return schedule[min(tries, len(schedule) - 1)] * scale


def reference(payment_id: str, operation: str, refund_id: str | None = None) -> str:
    """The bank reference (DESIGN.md section 4): `<payment id>:<operation>[:<refund id>]`."""
    return f"{payment_id}:{operation}:{refund_id}" if refund_id else f"{payment_id}:{operation}"


_INSERT = bank_attempts.insert()  # built once: a statement built per call costs its cache key


async def create(
    conn: AsyncConnection,
    *,
    payment_id: str,
    operation: str,
    amount: int,
    currency: str,
    refund_id: str | None = None,
    lease_s: float = LEASE_S,
    ref_suffix: str | None = None,
    defer: bool = False,
) -> dict[str, Any]:
    """Record an attempt before its bank call. `ref_suffix` names a refund that has no refund
    object (the reversal of a sale that landed after its payment failed). `defer`: the row
    goes with the `deferred` block `conn` is in (nothing in its transaction reads it back; the
    bank call follows the commit)."""
    now = now_s()
    row = {
        "id": new_id("att"),
        "payment_id": payment_id,
        "refund_id": refund_id,
        "operation": operation,
        "reference": reference(payment_id, operation, refund_id or ref_suffix),
        "amount": amount,
        "currency": currency,
        "status": "pending",
        "failure_code": None,
        "tries": 0,
        "next_check_at": time.time() + lease_s,
        "created": now,
        "updated": now,
    }
    if defer:
        await deferred.insert(conn, bank_attempts, row)
    else:  # at once, even inside a block: `ensure` reads by reference before it creates
        await conn.execute(_INSERT, row)
    return row


async def ensure(
    conn: AsyncConnection,
    *,
    payment_id: str,
    operation: str,
    amount: int,
    currency: str,
    ref_suffix: str | None = None,
) -> str:
    """The id of the attempt with this reference, recorded now if there is none yet."""
    existing = await by_reference(conn, reference(payment_id, operation, ref_suffix))
    if existing is not None:
        return str(existing["id"])
    created = await create(
        conn,
        payment_id=payment_id,
        operation=operation,
        amount=amount,
        currency=currency,
        ref_suffix=ref_suffix,
    )
    return str(created["id"])


_GET = sa.select(bank_attempts).where(bank_attempts.c.id == sa.bindparam("match_id"))
_MANY = sa.select(bank_attempts).where(
    bank_attempts.c.id.in_(sa.bindparam("match_ids", expanding=True))
)
_OPEN_FOR_PAYMENT = (
    sa.select(bank_attempts)
    .where(
        bank_attempts.c.payment_id == sa.bindparam("match_payment"),
        bank_attempts.c.status.in_(OPEN),
    )
    .order_by(bank_attempts.c.id)
)


async def get(conn: AsyncConnection, attempt_id: str) -> sa.RowMapping | None:
    return (await conn.execute(_GET, {"match_id": attempt_id})).mappings().one_or_none()


async def get_many(conn: AsyncConnection, attempt_ids: list[str]) -> dict[str, sa.RowMapping]:
    """Attempts by id, keyed by id (missing ids are absent)."""
    if not attempt_ids:
        return {}
    rows = await conn.execute(_MANY, {"match_ids": list(attempt_ids)})
    return {row["id"]: row for row in rows.mappings()}


async def by_reference(conn: AsyncConnection, ref: str) -> sa.RowMapping | None:
    query = sa.select(bank_attempts).where(bank_attempts.c.reference == ref)
    return (await conn.execute(query)).mappings().one_or_none()


async def open_for_payment(conn: AsyncConnection, payment_id: str) -> list[sa.RowMapping]:
    rows = await conn.execute(_OPEN_FOR_PAYMENT, {"match_payment": payment_id})
    return list(rows.mappings().all())


async def for_payment(conn: AsyncConnection, payment_id: str) -> list[sa.RowMapping]:
    query = (
        sa.select(bank_attempts)
        .where(bank_attempts.c.payment_id == payment_id)
        .order_by(bank_attempts.c.id)
    )
    return list((await conn.execute(query)).mappings().all())


async def due(
    conn: AsyncConnection, *, now: float, limit: int, all_open: bool = False
) -> list[str]:
    """Open attempts whose next check has come (or every open one, after a restart)."""
    query = sa.select(bank_attempts.c.id).where(bank_attempts.c.status.in_(OPEN))
    if not all_open:
        query = query.where(bank_attempts.c.next_check_at <= now)
    query = query.order_by(bank_attempts.c.next_check_at).limit(limit)
    return list((await conn.execute(query)).scalars().all())


async def update(conn: AsyncConnection, attempt_id: str, **values: Any) -> None:
    """Set `values` on an attempt: inside a `deferred` block (the processor's answers) with the
    block's other writes, at its end, so nothing in that transaction may read the attempt
    after this (the answers read their attempts first, under their payments' locks)."""
    await deferred.update(conn, bank_attempts, "id", attempt_id, {**values, "updated": now_s()})
