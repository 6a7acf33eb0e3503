"""SMS: the file sender (the default), the HTTP provider adapter against a real local HTTP
server, and `notify_sms` through the delivery loop with retries."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from paygate.notifications.sms import (
    FileSmsSender,
    HttpSmsSender,
    SmsError,
    masked,
    sms_sender_from_url,
)
from paygate.notifications.tables import notification_messages
from paygate.notifications.worker import NotificationService
from paygate.runtime import Runtime
from tests.notifications.support import Receiver, eventually

PHONE = "+15550100123"


async def test_the_file_sender_appends_json_lines(tmp_path: Path) -> None:
    sender = FileSmsSender(tmp_path / "out" / "sms.log")
    await sender.send(PHONE, "first")
    await sender.send(PHONE, "second ü")
    lines = [json.loads(x) for x in (tmp_path / "out" / "sms.log").read_text().splitlines()]
    assert [(x["to"], x["text"]) for x in lines] == [(PHONE, "first"), (PHONE, "second ü")]


async def test_the_http_sender_posts_a_form_with_basic_auth(receiver: Receiver) -> None:
    url = receiver.url("/2010-04-01/Messages.json").replace("http://", "http://AC123:tok%40en@")
    sender = sms_sender_from_url(url + "?from=%2B15550000000", Path("/nonexistent"))
    assert isinstance(sender, HttpSmsSender) and "tok" not in sender.url
    try:
        await sender.send(PHONE, "Acme: payment of 19.99 USD received.")
        receiver.behave("/2010-04-01/Messages.json", status=401)
        with pytest.raises(SmsError, match="HTTP 401"):
            await sender.send(PHONE, "again")
    finally:
        await sender.aclose()
    first = receiver.requests[0]
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(first.body.decode()).items()}
    assert form == {
        "To": PHONE,
        "From": "+15550000000",
        "Body": "Acme: payment of 19.99 USD received.",
    }
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:tok@en").decode()


async def test_an_unreachable_provider_is_an_sms_error(receiver: Receiver) -> None:
    url = receiver.url("/x")
    receiver.close()
    sender = HttpSmsSender(url, "+15550000000", timeout_s=1)
    try:
        with pytest.raises(SmsError, match="could not reach"):
            await sender.send(PHONE, "hello")
    finally:
        await sender.aclose()


def test_senders_from_settings(tmp_path: Path) -> None:
    default = sms_sender_from_url(None, tmp_path)
    assert isinstance(default, FileSmsSender) and default.path == tmp_path / "sms.log"
    with pytest.raises(ValueError):
        sms_sender_from_url("ftp://sms.example/", tmp_path)
    assert masked(PHONE) == "+15…23" and PHONE not in masked(PHONE)


async def test_notify_sms_goes_through_the_loop_with_retries(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.behave("/sms", fail_first=2)
    service = NotificationService(
        runtime, sms=HttpSmsSender(receiver.url("/sms"), "+15550000000"), poll_s=0.05
    )
    task = asyncio.create_task(service.run())
    try:
        message_id = await service.notify_sms(PHONE, "Your order shipped", dedupe_key="ship:1")
        again = await service.notify_sms(PHONE, "Your order shipped", dedupe_key="ship:1")
        assert again == message_id
        with pytest.raises(ValueError):
            await service.notify_sms("555-0100", "no")
        await eventually(lambda: len(receiver.at("/sms", ok_only=True)) == 1)
        for _ in range(100):
            async with runtime.db.read() as conn:
                row = (await conn.execute(sa.select(notification_messages))).mappings().one()
            if row["status"] == "sent":
                break
            await asyncio.sleep(0.02)
        assert (row["id"], row["status"], row["attempts"]) == (message_id, "sent", 3)
        assert len(receiver.at("/sms")) == 3
    finally:
        await service.stop()
    assert task.done()


async def test_the_default_sender_writes_to_the_data_folder(runtime: Runtime) -> None:
    service = NotificationService(runtime, poll_s=0.05)
    await service.notify_sms(PHONE, "hello")
    started, _ = await service.pump()
    assert started == 1
    path = runtime.settings.data_dir / "sms.log"
    await eventually(lambda: path.exists() and "hello" in path.read_text())
    await service.stop()
