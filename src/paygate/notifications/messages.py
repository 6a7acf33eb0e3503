"""All SQL of e-mail and SMS: the message queue, who a message goes to, and a merchant's day in
figures for the daily summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.notifications.repository import insert_ignoring_duplicates
from paygate.notifications.tables import notification_messages
from paygate.platform.db.tables import customers, merchants, payments, refunds

M = notification_messages.c


@dataclass(frozen=True, slots=True)
class Contact:
    """Who a customer notice goes to, and whose name it carries."""

    merchant_name: str
    email: str | None
    phone: str | None
    name: str | None
    # For refunds: the card and the payment they return to.
    payment: dict[str, Any] | None = None


def message_row(
    *,
    merchant_id: str,
    channel: str,
    kind: str,
    dedupe_key: str,
    recipient: str,
    body_text: str,
    give_up_at: float,
    due: float,
    subject: str | None = None,
    body_html: str | None = None,
    sender_name: str | None = None,
) -> dict[str, Any]:
    now = now_s()
    return {
        "id": new_id("msg"),
        "merchant_id": merchant_id,
        "channel": channel,
        "kind": kind,
        "dedupe_key": dedupe_key,
        "recipient": recipient,
        "sender_name": sender_name,
        "subject": subject,
        "body_text": body_text,
        "body_html": body_html,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": due,
        "give_up_at": give_up_at,
        "locked_until": None,
        "created": now,
        "updated": now,
        "sent_at": None,
    }


async def add_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await insert_ignoring_duplicates(conn, notification_messages, rows, ("dedupe_key",))


async def due_messages(conn: AsyncConnection, now: float, limit: int) -> list[sa.RowMapping]:
    """Pending messages whose lease is free, soonest due first (locked and skipped on
    PostgreSQL, like deliveries)."""
    query = (
        sa.select(notification_messages)
        .where(M.status == "pending", sa.or_(M.locked_until.is_(None), M.locked_until <= now))
        .order_by(M.next_attempt_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list((await conn.execute(query)).mappings().all())


async def lease_messages(conn: AsyncConnection, ids: list[str], until: float | None) -> None:
    if ids:
        await conn.execute(
            notification_messages.update().where(M.id.in_(ids)).values(locked_until=until)
        )


async def record_message(conn: AsyncConnection, message_id: str, values: dict[str, Any]) -> None:
    await conn.execute(
        notification_messages.update()
        .where(M.id == message_id)
        .values(locked_until=None, updated=now_s(), **values)
    )


async def get_message(conn: AsyncConnection, dedupe_key: str) -> sa.RowMapping | None:
    query = sa.select(notification_messages).where(M.dedupe_key == dedupe_key)
    return (await conn.execute(query)).mappings().one_or_none()


async def merchant(conn: AsyncConnection, merchant_id: str) -> sa.RowMapping | None:
    query = sa.select(merchants.c.name, merchants.c.email).where(merchants.c.id == merchant_id)
    return (await conn.execute(query)).mappings().one_or_none()


async def contact(
    conn: AsyncConnection, merchant_id: str, event_type: str, obj: dict[str, Any]
) -> Contact | None:
    """The customer of a payment or refund event, or None when there is nobody to tell."""
    payment: dict[str, Any] | None = None
    if event_type.startswith("refund."):
        query = sa.select(payments.c.customer_id, payments.c.payment_method).where(
            payments.c.id == obj["payment"]
        )
        row = (await conn.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        customer_id = row["customer_id"]
        payment = {"id": obj["payment"], "payment_method": row["payment_method"]}
    else:
        customer_id = obj.get("customer")
    if customer_id is None:
        return None
    shop = await merchant(conn, merchant_id)
    if shop is None:
        return None
    found = (
        (await conn.execute(sa.select(customers).where(customers.c.id == customer_id)))
        .mappings()
        .one_or_none()
    )
    if found is None:
        return None
    # Customers carry no phone number yet: when the column exists, SMS receipts follow.
    phone = found.get("phone")
    return Contact(shop["name"], found["email"], phone, found["name"], payment)


async def merchants_to_summarize(conn: AsyncConnection) -> list[sa.RowMapping]:
    query = sa.select(merchants.c.id, merchants.c.name, merchants.c.email).where(
        merchants.c.email.is_not(None)
    )
    return list((await conn.execute(query)).mappings().all())


async def day_figures(
    conn: AsyncConnection, merchant_id: str, start: int, end: int
) -> dict[tuple[bool, str], dict[str, int]]:
    """Per (livemode, currency): payments created in [start, end) that succeeded or failed, and
    refunds that succeeded in it, with their counts and amounts."""
    p, r = payments.c, refunds.c
    figures: dict[tuple[bool, str], dict[str, int]] = {}

    def slot(livemode: bool, currency: str) -> dict[str, int]:
        empty = dict.fromkeys(
            ("succeeded_count", "succeeded", "failed_count", "refunded_count", "refunded"), 0
        )
        return figures.setdefault((livemode, currency), empty)

    paid = (
        sa.select(p.livemode, p.currency, p.status, sa.func.count(), sa.func.sum(p.amount_captured))
        .where(
            p.merchant_id == merchant_id,
            p.created >= start,
            p.created < end,
            p.status.in_(("succeeded", "failed")),
        )
        .group_by(p.livemode, p.currency, p.status)
    )
    for livemode, currency, status, count, captured in (await conn.execute(paid)).all():
        figures_for = slot(livemode, currency)
        figures_for[f"{status}_count"] += int(count)
        if status == "succeeded":
            figures_for["succeeded"] += int(captured or 0)
    refunded = (
        sa.select(r.livemode, r.currency, sa.func.count(), sa.func.sum(r.amount))
        .where(
            r.merchant_id == merchant_id,
            r.status == "succeeded",
            r.updated >= start,
            r.updated < end,
        )
        .group_by(r.livemode, r.currency)
    )
    for livemode, currency, count, amount in (await conn.execute(refunded)).all():
        figures_for = slot(livemode, currency)
        figures_for["refunded_count"] += int(count)
        figures_for["refunded"] += int(amount or 0)
    return figures
