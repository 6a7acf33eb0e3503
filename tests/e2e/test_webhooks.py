"""Webhooks and receipts through the real pipeline: API → outbox → relay → fraud → processor →
bank, with the notification service registered on the pipeline's bus and its loop running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from paygate.config import Settings
from paygate.notifications.worker import NotificationService
from paygate.runtime import Runtime
from tests.conftest import make_settings, new_merchant, scale_out
from tests.e2e.conftest import quick_connector, running_pipeline
from tests.notifications.support import Receiver, SmtpServer, eventually, verify
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}
INTERNAL = {"payment.fraud_assessed", "payment.capture_requested", "payment.cancel_requested"}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, smtp: SmtpServer
) -> Settings:
    return make_settings(
        tmp_path,
        database_url,
        **scale_out(request, database_url),
        webhook_allow_private=True,  # the receivers listen on the loopback
        webhook_backoff_scale=1e-4,
        smtp_url=f"smtp://127.0.0.1:{smtp.controller.port}?from=receipts@shop.example",
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
async def notifier(runtime: Runtime, bank_url: str) -> AsyncIterator[NotificationService]:
    """Wired as the pipeline wires it: registered on its bus before the bus starts, the loop as
    a task. The global cap is small, so that the isolation test shows the per-endpoint bound at
    work: without it, a slow endpoint's backlog would take every slot."""
    service = NotificationService(runtime, poll_s=0.05, max_in_flight=6, per_endpoint=4)
    bank = quick_connector(bank_url)
    async with running_pipeline(runtime, bank, wire=lambda p: service.register(p.bus)):
        task = asyncio.create_task(service.run(), name="notifications")
        yield service
        await service.stop()
    assert task.done()


async def add_endpoint(client: httpx.AsyncClient, auth: dict[str, str], url: str) -> dict[str, Any]:
    r = await client.post(
        "/v1/webhook_endpoints", json={"url": url, "enabled_events": ["*"]}, headers=auth
    )
    assert r.status_code == 201, r.text
    endpoint: dict[str, Any] = r.json()
    return endpoint


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


def received(receiver: Receiver, path: str, payment_id: str) -> list[dict[str, Any]]:
    found = [orjson.loads(r.body) for r in receiver.at(path, ok_only=True)]
    return [e for e in found if e["data"]["object"]["id"] == payment_id]


async def test_a_payment_delivers_its_public_events_and_a_receipt(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    smtp: SmtpServer,
    notifier: NotificationService,
) -> None:
    e = await add_endpoint(client, auth, receiver.url("/hooks"))
    p = await pay(client, auth, customer={"email": "jenny@example.com", "name": "Jenny"})
    assert p["status"] == "succeeded"
    await eventually(lambda: len(received(receiver, "/hooks", p["id"])) == 3)
    events = sorted(received(receiver, "/hooks", p["id"]), key=lambda ev: ev["sequence"])
    assert [ev["type"] for ev in events] == [
        "payment.created",
        "payment.processing",
        "payment.succeeded",
    ]
    assert [ev["data"]["object"]["status"] for ev in events] == [
        "pending",
        "processing",
        "succeeded",
    ]
    for r in receiver.at("/hooks"):
        assert verify(r.headers["Paygate-Signature"], r.body, e["secret"])
    await asyncio.sleep(0.2)  # anything internal would have arrived by now
    types = {orjson.loads(r.body)["type"] for r in receiver.requests}
    assert not types & INTERNAL
    listed = (await client.get("/v1/events", headers=auth)).json()
    assert {ev["type"] for ev in listed["data"]} == {ev["type"] for ev in events}

    await eventually(lambda: len(smtp.messages) == 1)
    to, message = smtp.messages[0]
    assert to == ["jenny@example.com"] and message["Subject"] == "Your receipt from Acme"


async def test_a_slow_endpoint_does_not_delay_another_merchants_deliveries(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    notifier: NotificationService,
) -> None:
    receiver.behave("/slow", delay_s=2.0)
    await add_endpoint(client, auth, receiver.url("/slow"))
    other = await new_merchant(client, "Other")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    await add_endpoint(client, other_auth, receiver.url("/fast"))

    await asyncio.gather(*(pay(client, auth) for _ in range(3)))  # 9 events, 2 s each
    p = await pay(client, other_auth)
    settled = time.time()
    await eventually(lambda: len(received(receiver, "/fast", p["id"])) == 3, timeout_s=5)
    last = max(r.at for r in receiver.at("/fast"))
    assert last - settled < 1.5
    # The slow endpoint was still busy then, with at most 4 of its deliveries at a time.
    assert len(receiver.at("/slow")) < 9
    assert receiver.behaviours["/slow"].peak == 4


async def test_each_endpoint_receives_events_at_its_own_api_version(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    notifier: NotificationService,
) -> None:
    old = await add_endpoint(client, auth, receiver.url("/old"))
    r = await client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/new"), "enabled_events": ["payment.failed"]},
        headers={**auth, "Paygate-Version": "2026-11-01"},
    )
    assert r.status_code == 201, r.text
    new = r.json()
    assert (old["api_version"], new["api_version"]) == ("2026-01-01", "2026-11-01")
    bad = await client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/x"), "enabled_events": ["*"], "api_version": "2020-01-01"},
        headers=auth,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "api_version"

    p = await pay(client, auth, card={"number": "4000000000000002"})
    assert p["status"] == "failed"
    await eventually(lambda: bool(received(receiver, "/new", p["id"])))
    await eventually(
        lambda: any(e["type"] == "payment.failed" for e in received(receiver, "/old", p["id"]))
    )
    at_new = received(receiver, "/new", p["id"])[0]["data"]["object"]
    at_old = next(e for e in received(receiver, "/old", p["id"]) if e["type"] == "payment.failed")[
        "data"
    ]["object"]
    assert at_old["failure_code"] == "card_declined" and "last_error" not in at_old
    assert at_new["last_error"]["code"] == "card_declined" and "failure_code" not in at_new
    # Each body is signed as sent.
    for path, endpoint in (("/old", old), ("/new", new)):
        for req in receiver.at(path):
            assert verify(req.headers["Paygate-Signature"], req.body, endpoint["secret"])
