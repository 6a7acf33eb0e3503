"""Fraud reports: a chargeback or a card network's notice says a payment was fraud. A report
is appended (never changed), moves no money, and labels the payment: for the features (the
merchant's fraud share, through the internal `payment.fraud_reported` that the fraud worker
counts once per payment) and for training (`paygate fraud train --from-db`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import NotFound
from paygate.fraud.tables import fraud_reports
from paygate.ids import new_id, now_s
from paygate.payments import repository as payments
from paygate.platform import outbox
from paygate.platform.db.pagination import Page, fetch_page

REPORT_TYPES = ("chargeback", "card_network_notice")


def render(row: sa.RowMapping | dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fraud_report",
        "livemode": row["livemode"],
        "payment": row["payment_id"],
        "type": row["type"],
        "reason": row["reason"],
        "created": row["created"],
    }


async def create(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    *,
    payment_id: str,
    type: str,
    reason: str | None,
) -> dict[str, Any]:
    payment = await payments.get(conn, merchant_id, livemode, payment_id)
    if payment is None:
        raise NotFound("No such payment.", param="payment")
    row = {
        "id": new_id("frp"),
        "payment_id": payment_id,
        "merchant_id": merchant_id,
        "livemode": livemode,
        "type": type,
        "reason": reason,
        "created": now_s(),
    }
    await conn.execute(fraud_reports.insert(), row)
    report = render(row)
    # Internal: what the fraud worker needs to count the label against the payment's hour.
    await outbox.emit(
        conn,
        type="payment.fraud_reported",
        obj={
            **report,
            "merchant_id": merchant_id,
            "payment_created": payment["created"],
        },
        merchant_id=merchant_id,
        sequence=1,
    )
    return report


async def list_page(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    page: Page,
    *,
    payment: str | None = None,
) -> list[dict[str, Any]]:
    c = fraud_reports.c
    query = sa.select(fraud_reports).where(c.merchant_id == merchant_id, c.livemode == livemode)
    if payment:
        query = query.where(c.payment_id == payment)
    return [render(r) for r in await fetch_page(conn, query, c.id, page)]


async def reported_payment_ids(conn: AsyncConnection) -> set[str]:
    """Every payment some report labels as fraud (the training labels)."""
    return set((await conn.execute(sa.select(fraud_reports.c.payment_id).distinct())).scalars())
