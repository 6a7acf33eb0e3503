"""Webhook delivery from the committed outbox to real HTTP receivers: signed, one delivery per
(event, endpoint), retried until the endpoint recovers, dead-lettered and replayed, during a
secret rotation, and never carrying a card number or a secret."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from paygate.notifications.tables import webhook_attempts, webhook_deliveries
from paygate.notifications.worker import NotificationService
from paygate.platform.bus import Event, LocalBus
from paygate.platform.db.tables import outbox
from paygate.platform.outbox import PUBLIC_TYPES
from paygate.platform.relay import Relay
from paygate.runtime import Runtime
from tests.conftest import ADMIN_KEY, new_merchant
from tests.notifications.conftest import Events
from tests.notifications.support import Receiver, eventually, verify
from tests.support import CARD, idem, payment_body, statements


async def endpoint(
    client: httpx.AsyncClient, auth: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    r = await client.post(
        "/v1/webhook_endpoints", json={"url": url, "enabled_events": events or ["*"]}, headers=auth
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def attempts(
    client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, **params: Any
) -> list[dict[str, Any]]:
    r = await client.get(
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
        params={"limit": 100, **params},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def recorded(
    client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, count: int, status: str
) -> list[dict[str, Any]]:
    """The endpoint's attempts once `count` of them have `status` (an answer reaches the
    receiver a moment before its attempt is recorded)."""
    for _ in range(250):
        history = await attempts(client, auth, endpoint_id)
        if sum(a["status"] == status for a in history) >= count:
            return history
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} {status} attempts were not recorded in time")


async def stored_body(runtime: Runtime, event_id: str) -> bytes:
    async with runtime.db.read() as conn:
        text = await conn.scalar(
            sa.select(sa.type_coerce(outbox.c.payload, sa.Text)).where(outbox.c.id == event_id)
        )
    return str(text).encode()


async def test_events_are_signed_and_sent_as_committed(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    e = await endpoint(client, auth, receiver.url("/hooks"))
    p = await pay(client, auth)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/hooks")) == 1)
    got = receiver.at("/hooks")[0]
    assert got.headers["Content-Type"] == "application/json"
    assert verify(got.headers["Paygate-Signature"], got.body, e["secret"])
    event = orjson.loads(got.body)
    assert (event["type"], event["object"], event["data"]["object"]["id"]) == (
        "payment.created",
        "event",
        p["id"],
    )
    assert got.body == await stored_body(runtime, event["id"])  # the stored bytes, exactly

    delivered = await recorded(client, auth, e["id"], 1, "succeeded")
    assert len(delivered) == 1
    a = delivered[0]
    assert a["object"] == "webhook_delivery" and a["id"].startswith("whd_")
    assert (a["event"], a["endpoint"], a["attempt"], a["status"]) == (
        event["id"],
        e["id"],
        1,
        "succeeded",
    )
    assert a["response_status"] == 200 and a["error"] is None and a["next_attempt_at"] is None
    assert a["duration_ms"] >= 0 and a["created"] > 0

    # The bus delivers at least once: the same event again adds no delivery and no request.
    await notifier.on_event(event)
    await notifier.on_event(event)
    await asyncio.sleep(0.3)
    assert len(receiver.at("/hooks")) == 1
    async with runtime.db.read() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(webhook_deliveries))
    assert count == 1


async def test_subscriptions_and_internal_events(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    await endpoint(client, auth, receiver.url("/all"))
    await endpoint(client, auth, receiver.url("/succeeded"), ["payment.succeeded"])
    off = await endpoint(client, auth, receiver.url("/off"))
    await client.post(f"/v1/webhook_endpoints/{off['id']}", json={"enabled": False}, headers=auth)
    p = await pay(client, auth)
    for internal in ("payment.fraud_assessed", "payment.capture_requested"):
        sent = await events.emit(internal, {**p, "risk": {}}, merchant["id"])
        await notifier.on_event(sent)  # even handed over directly, it never goes out
    await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant["id"], 3)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/all")) == 2 and len(receiver.at("/succeeded")) == 1)
    await asyncio.sleep(0.2)
    types = [orjson.loads(r.body)["type"] for r in receiver.at("/all")]
    assert sorted(types) == ["payment.created", "payment.succeeded"]
    assert orjson.loads(receiver.at("/succeeded")[0].body)["type"] == "payment.succeeded"
    assert receiver.at("/off") == [] and len(receiver.requests) == 3


async def test_an_endpoint_that_fails_then_recovers_gets_every_event(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    receiver.behave("/flaky", fail_first=5)
    e = await endpoint(client, auth, receiver.url("/flaky"))
    paid = [await pay(client, auth) for _ in range(3)]
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/flaky", ok_only=True)) == 3)
    got = {orjson.loads(r.body)["data"]["object"]["id"] for r in receiver.at("/flaky", True)}
    assert got == {p["id"] for p in paid}
    history = await recorded(client, auth, e["id"], 3, "succeeded")
    failed = [a for a in history if a["status"] == "failed"]
    assert len(failed) == 5 and len(history) == 8
    assert all(a["response_status"] == 500 and a["error"] == "HTTP 500" for a in failed)
    assert all(a["next_attempt_at"] is not None for a in failed)
    assert sorted(a["status"] for a in history if a["status"] != "failed") == ["succeeded"] * 3
    for r in receiver.at("/flaky"):
        assert verify(r.headers["Paygate-Signature"], r.body, e["secret"])


# Three days shrunk to 1.3 s: the delivery dies quickly.
@pytest.mark.parametrize("backoff_scale", [5e-6], ids=["fast"])
async def test_a_dead_endpoint_dead_letters_and_a_redelivery_delivers(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    receiver.behave("/down", status=503)
    e = await endpoint(client, auth, receiver.url("/down"))
    await pay(client, auth)
    await events.relay_all()
    event_id = (await client.get("/v1/events", headers=auth)).json()["data"][0]["id"]

    history = await recorded(client, auth, e["id"], 1, "dead")
    assert history[0]["status"] == "dead" and history[0]["next_attempt_at"] is None
    assert len(history) >= 2 and all(a["status"] == "failed" for a in history[1:])
    assert [a["attempt"] for a in history] == list(range(len(history), 0, -1))
    tries = len(receiver.at("/down"))
    await asyncio.sleep(0.3)
    assert len(receiver.at("/down")) == tries  # dead: no more tries

    receiver.behave("/down", status=200)
    r = await client.post(f"/v1/events/{event_id}/redeliver", headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    assert r.json() == {"object": "event_redelivery", "event": event_id, "endpoints": [e["id"]]}
    await eventually(lambda: len(receiver.at("/down", ok_only=True)) == 1)
    assert (await recorded(client, auth, e["id"], 1, "succeeded"))[0]["status"] == "succeeded"

    # A replay to one named endpoint, of an event that was delivered already.
    r = await client.post(
        f"/v1/events/{event_id}/redeliver", json={"endpoint": e["id"]}, headers=auth
    )
    assert r.status_code == 202
    await eventually(lambda: len(receiver.at("/down", ok_only=True)) == 2)
    missing = await client.post(
        f"/v1/events/{event_id}/redeliver", json={"endpoint": "we_missing"}, headers=auth
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "endpoint"

    # Deleting the endpoint takes its delivery history with it.
    await recorded(client, auth, e["id"], 2, "succeeded")
    assert (await client.delete(f"/v1/webhook_endpoints/{e['id']}", headers=auth)).is_success
    async with runtime.db.read() as conn:
        for table in (webhook_deliveries, webhook_attempts):
            assert await conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0


async def test_during_a_rotation_both_secrets_sign(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    e = await endpoint(client, auth, receiver.url("/rotating"))
    r = await client.post(f"/v1/webhook_endpoints/{e['id']}/rotate_secret", headers=auth)
    new = r.json()["secret"]
    p = await pay(client, auth)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/rotating")) == 1)
    got = receiver.at("/rotating")[0]
    header = got.headers["Paygate-Signature"]
    assert header.count("v1=") == 2
    assert verify(header, got.body, e["secret"]) and verify(header, got.body, new)

    r = await client.post(
        f"/v1/webhook_endpoints/{e['id']}/rotate_secret",
        json={"previous_secret_expires_in": 0},
        headers=auth,
    )
    newest = r.json()["secret"]
    await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant["id"])
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/rotating")) == 2)
    got = receiver.at("/rotating")[1]
    header = got.headers["Paygate-Signature"]
    assert header.count("v1=") == 1 and verify(header, got.body, newest)
    assert not verify(header, got.body, new) and not verify(header, got.body, e["secret"])


async def test_no_card_number_and_no_secret_in_any_payload_or_log(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
    capfd: pytest.CaptureFixture[str],
) -> None:
    receiver.behave("/audit", fail_first=1)
    e = await endpoint(client, auth, receiver.url("/audit"))
    p = await pay(client, auth, customer={"email": "jenny@example.com", "name": "Jenny"})
    await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant["id"])
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/audit", ok_only=True)) == 2)
    await recorded(client, auth, e["id"], 2, "succeeded")
    number, secret = CARD["number"], e["secret"]
    for r in receiver.requests:
        seen = r.body.decode() + repr(r.headers)
        assert number not in seen and secret not in seen and secret[6:] not in seen
        assert "4242" in r.body.decode()  # the last four digits, as the contract shows them
    out, err = capfd.readouterr()
    logs = out + err
    assert "webhook.delivered" in logs and "webhook.failed" in logs
    assert number not in logs and secret[6:] not in logs
    deliveries = str(await attempts(client, auth, e["id"]))
    assert number not in deliveries and secret[6:] not in deliveries


async def test_a_batch_of_events_makes_the_same_deliveries_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    notifier: NotificationService,
) -> None:
    # The relay's batch reaches the notifier in one call (one read, one write transaction);
    # every event still gets its own delivery per endpoint, and a redelivered batch adds none.
    other = await new_merchant(client, name="Other shop")
    other_auth = {"Authorization": f"Bearer {other['api_key']}"}
    await endpoint(client, auth, receiver.url("/first"))
    await endpoint(client, other_auth, receiver.url("/second"))
    for who in (auth, other_auth, auth, other_auth, auth):
        await pay(client, who)
    bus, sizes, seen = LocalBus(), [], []

    async def batch(events: list[Event]) -> None:
        sizes.append(len(events))
        seen.extend(events)
        await notifier.on_events(events)

    bus.subscribe("notifications", sorted(PUBLIC_TYPES), notifier.on_event, batch=batch)
    await Relay(runtime.db, bus).drain(10)
    assert max(sizes) > 1
    await eventually(lambda: len(receiver.at("/first")) == 3 and len(receiver.at("/second")) == 2)
    await notifier.on_events(seen)  # delivered again, as a broker may
    await asyncio.sleep(0.3)
    assert (len(receiver.at("/first")), len(receiver.at("/second"))) == (3, 2)
    async with runtime.db.read() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(webhook_deliveries))
    assert count == 5


async def test_each_event_goes_to_the_enabled_endpoints_of_its_own_mode_read_in_one_statement(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    # A live key's endpoint is the live mode's; the test key's endpoints take test events.
    r = await client.post(
        "/v1/api_keys",
        json={"type": "secret", "merchant": merchant["id"], "livemode": True},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert r.status_code == 201, r.text
    live = {"Authorization": f"Bearer {r.json()['secret']}"}
    await endpoint(client, live, receiver.url("/live"))
    await endpoint(client, auth, receiver.url("/one"))
    await endpoint(client, auth, receiver.url("/two"), ["payment.succeeded"])
    off = await endpoint(client, auth, receiver.url("/off"))
    await client.post(f"/v1/webhook_endpoints/{off['id']}", json={"enabled": False}, headers=auth)
    p = await pay(client, auth)
    sent = [
        await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant["id"], 3),
        await events.emit("payment.fraud_assessed", {**p, "risk": {}}, merchant["id"], 2),
    ]
    with statements(runtime.db) as seen:
        await notifier.on_events(sent)
    # The delivery loop polls on its own clock meanwhile: its claims are not the consumer's.
    claims = ("FROM webhook_deliveries", "FROM notification_messages")
    reads = [s for s in seen if s.startswith("SELECT") and not any(c in s for c in claims)]
    assert len(reads) == 1, reads  # the events and their endpoints together
    await eventually(lambda: len(receiver.at("/one")) == 1 and len(receiver.at("/two")) == 1)
    await asyncio.sleep(0.2)
    assert receiver.at("/live") == [] and receiver.at("/off") == []
    for path in ("/one", "/two"):
        assert orjson.loads(receiver.at(path)[0].body)["type"] == "payment.succeeded"
