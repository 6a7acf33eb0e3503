"""E-mail to customers (receipts, failure notices) and to merchants (daily summaries), rendered
from the templates as text and HTML and sent to a real SMTP server on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa

from paygate.notifications.tables import notification_messages
from paygate.notifications.worker import NotificationService
from paygate.platform.db.tables import payments, refunds
from paygate.runtime import Runtime
from tests.notifications.conftest import Events
from tests.notifications.support import SmtpServer, eventually
from tests.support import ADMIN_KEY, CARD, idem, payment_body

JENNY = {"email": "jenny@example.com", "name": "Jenny <b>Rosen</b>"}


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment: dict[str, Any] = r.json()
    return payment


def parts(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def messages_in_db(runtime: Runtime) -> list[Any]:
    async with runtime.db.read() as conn:
        return list((await conn.execute(sa.select(notification_messages))).mappings().all())


async def test_receipt_on_payment_succeeded(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    smtp: SmtpServer,
    events: Events,
) -> None:
    p = await pay(client, auth, customer=JENNY, description="Order 1042")
    succeeded = {**p, "status": "succeeded", "amount_captured": 1999}
    event = await events.emit("payment.succeeded", succeeded, merchant["id"])
    await events.relay_all()
    await events.bus.publish([event])  # delivered twice: still one e-mail
    await eventually(lambda: len(smtp.messages) == 1)
    to, message = smtp.messages[0]
    assert to == ["jenny@example.com"] and message["To"] == "jenny@example.com"
    assert message["From"] == "Acme <receipts@shop.example>"
    assert message["Subject"] == "Your receipt from Acme"
    text, html = parts(message)
    for body in (text, html):
        assert "19.99 USD" in body and "Visa ending in 4242" in body and p["id"] in body
        assert "Order 1042" in body
    assert "Hello Jenny <b>Rosen</b>" in text
    assert "Jenny &lt;b&gt;Rosen&lt;/b&gt;" in html and "<b>Rosen" not in html
    assert CARD["number"] not in message.as_string()
    assert len(await messages_in_db(events.runtime)) == 1


async def test_failure_notice_and_refund_receipt(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    smtp: SmtpServer,
    events: Events,
) -> None:
    failed = await pay(client, auth, customer=JENNY)
    await events.emit(
        "payment.failed",
        {
            **failed,
            "status": "failed",
            "failure_code": "card_declined",
            "failure_message": "The card was declined.",
        },
        merchant["id"],
    )
    paid = await pay(client, auth, customer=JENNY)
    refund = {
        "id": "re_01TEST",
        "object": "refund",
        "livemode": False,
        "payment": paid["id"],
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "reason": None,
        "failure_code": None,
        "metadata": {},
        "created": paid["created"],
    }
    await events.emit("refund.succeeded", refund, merchant["id"])
    await events.emit("refund.created", {**refund, "status": "pending"}, merchant["id"], 1)
    await events.relay_all()
    await eventually(lambda: len(smtp.messages) == 2)
    by_subject = {m["Subject"]: parts(m) for _, m in smtp.messages}
    text, html = by_subject["Your payment to Acme did not go through"]
    assert (
        "19.99 USD" in text and "The card was declined." in text and "Nothing was charged" in html
    )
    text, html = by_subject["Your refund from Acme"]
    assert "5.00 USD" in text and "Visa ending in 4242" in text and paid["id"] in html


async def test_nothing_is_sent_without_an_address_or_without_smtp(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    events: Events,
) -> None:
    nobody = await pay(client, auth)
    await events.emit("payment.succeeded", {**nobody, "status": "succeeded"}, merchant["id"])
    await events.relay_all()
    assert await messages_in_db(runtime) == []

    off = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"smtp_url": None})
    )
    quiet = NotificationService(off)
    assert quiet.email is None
    known = await pay(client, auth, customer=JENNY)
    event = await events.emit("payment.succeeded", {**known, "status": "succeeded"}, merchant["id"])
    await quiet.on_event(event)
    assert await messages_in_db(runtime) == []
    assert await quiet.send_daily_summaries(date.today()) == 0
    await quiet.stop()


async def test_e_mail_is_retried_until_the_server_takes_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    smtp: SmtpServer,
    events: Events,
) -> None:
    smtp.inbox.fail_first = 2
    p = await pay(client, auth, customer=JENNY)
    await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant["id"])
    await events.relay_all()
    await eventually(lambda: len(smtp.messages) == 1)
    for _ in range(100):
        (row,) = await messages_in_db(runtime)
        if row["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    assert (row["status"], row["attempts"], row["channel"]) == ("sent", 3, "email")


async def test_daily_summary_to_the_merchant(
    client: httpx.AsyncClient,
    runtime: Runtime,
    smtp: SmtpServer,
    notifier: NotificationService,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = await client.post(
        "/v1/merchants", json={"name": "Shop", "email": "owner@shop.example"}, headers=admin
    )
    auth = {"Authorization": f"Bearer {r.json()['api_key']}"}
    await client.post("/v1/merchants", json={"name": "No mail"}, headers=admin)
    await client.post(
        "/v1/merchants", json={"name": "Idle", "email": "idle@shop.example"}, headers=admin
    )
    won, lost = await pay(client, auth), await pay(client, auth, amount=500)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == won["id"])
            .values(status="succeeded", amount_captured=payments.c.amount)
        )
        await conn.execute(
            payments.update().where(payments.c.id == lost["id"]).values(status="failed")
        )
    refund = await client.post(
        "/v1/refunds", json={"payment": won["id"], "amount": 500}, headers={**auth, **idem()}
    )
    async with runtime.db.transaction() as conn:
        await conn.execute(
            refunds.update().where(refunds.c.id == refund.json()["id"]).values(status="succeeded")
        )
    today = datetime.now(UTC).date()
    assert await notifier.send_daily_summaries(today) == 1
    assert await notifier.send_daily_summaries(today) == 1  # the same summary: queued once
    assert await notifier.send_daily_summaries(date(2001, 1, 1)) == 0
    await eventually(lambda: len(smtp.messages) == 1)
    to, message = smtp.messages[0]
    assert to == ["owner@shop.example"]
    assert message["Subject"] == f"Your payments on {today.isoformat()}"
    text, html = parts(message)
    assert "Test USD: 1 succeeded (19.99 USD), 1 failed, 1 refunded (5.00 USD)" in text
    assert "Shop" in html and "19.99 USD" in html
