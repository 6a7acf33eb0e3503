"""Refund use cases: a refund reserves its amount on the payment at once (so concurrent refunds
can never exceed what was captured), and the bank's answer later settles or releases it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import NotFound
from paygate.ids import new_id, now_s
from paygate.ledger import service as ledger
from paygate.payments import attempts
from paygate.payments import repository as payments
from paygate.payments.service import state_of
from paygate.platform import outbox
from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import refunds
from paygate.refunds.schemas import RefundCreate, render


async def create(
    conn: AsyncConnection, merchant_id: str, livemode: bool, request: RefundCreate
) -> dict[str, Any]:
    payment = await payments.get(conn, merchant_id, livemode, request.payment, for_update=True)
    if payment is None:
        raise NotFound("No such payment.", param="payment")
    reserved, amount = state_of(payment).reserve_refund(request.amount)
    if not await payments.update(
        conn,
        payment["id"],
        payment["version"],
        {"amount_refund_pending": reserved.amount_refund_pending},
    ):
        raise NotFound("No such payment.", param="payment")  # pragma: no cover - row is locked
    now = now_s()
    row = {
        "id": new_id("re"),
        "merchant_id": merchant_id,
        "livemode": livemode,
        "payment_id": payment["id"],
        "amount": amount,
        "currency": payment["currency"],
        "status": "pending",
        "reason": request.reason,
        "failure_code": None,
        "metadata": request.metadata,
        "version": 1,
        "created": now,
        "updated": now,
    }
    await conn.execute(refunds.insert(), row)
    await attempts.create(
        conn,
        payment_id=payment["id"],
        operation="refund",
        amount=amount,
        currency=payment["currency"],
        refund_id=row["id"],
    )
    await ledger.record_refund_reserved(conn, row)
    await payments.log(
        conn, payment["id"], "refund.created", payment["status"], amount, {"refund": row["id"]}
    )
    refund = render(row)
    await outbox.emit(conn, type="refund.created", obj=refund, merchant_id=merchant_id, sequence=1)
    return refund


async def get(
    conn: AsyncConnection, merchant_id: str, livemode: bool, refund_id: str
) -> dict[str, Any]:
    refund, _version = await get_versioned(conn, merchant_id, livemode, refund_id)
    return refund


async def get_versioned(
    conn: AsyncConnection, merchant_id: str, livemode: bool, refund_id: str
) -> tuple[dict[str, Any], int]:
    """The refund and its row version (for cached reads)."""
    c = refunds.c
    row = (
        (
            await conn.execute(
                sa.select(refunds).where(
                    c.id == refund_id, c.merchant_id == merchant_id, c.livemode == livemode
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("No such refund.", param="id")
    return render(row), int(row["version"])


async def list_page(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page, *, payment: str | None
) -> list[dict[str, Any]]:
    c = refunds.c
    query = sa.select(refunds).where(c.merchant_id == merchant_id, c.livemode == livemode)
    if payment:
        query = query.where(c.payment_id == payment)
    prefix = [c.merchant_id, c.livemode]  # ix_refunds_merchant_id gives the order (fetch_page)
    return [render(r) for r in await fetch_page(conn, query, c.id, page, prefix=prefix)]
