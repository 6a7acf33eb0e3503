"""`/v1/webhook_endpoints` and `/v1/events`: secrets shown once and kept sealed, updates,
rotation, pagination, tenancy, validation and idempotent writes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import sqlalchemy as sa

from paygate.notifications.tables import webhook_endpoints
from paygate.notifications.webhooks import secret_aad
from paygate.platform import outbox
from paygate.runtime import Runtime
from tests.conftest import new_merchant
from tests.support import idem, payment_body

URL = "https://93.184.216.34/hooks"


async def create(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/webhook_endpoints", json={"url": URL, "enabled_events": ["*"], **body}, headers=auth
    )
    assert r.status_code == 201, r.text
    endpoint: dict[str, Any] = r.json()
    return endpoint


async def test_create_shows_the_secret_once_and_keeps_it_sealed(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    e = await create(client, auth, description="Orders", enabled_events=["payment.succeeded"])
    assert e["id"].startswith("we_") and e["object"] == "webhook_endpoint"
    assert (e["url"], e["description"], e["enabled"]) == (URL, "Orders", True)
    assert e["enabled_events"] == ["payment.succeeded"] and e["livemode"] is False
    assert e["secret"].startswith("whsec_") and e["previous_secret_expires_at"] is None
    again = (await client.get(f"/v1/webhook_endpoints/{e['id']}", headers=auth)).json()
    assert "secret" not in again and again["url"] == URL
    listed = (await client.get("/v1/webhook_endpoints", headers=auth)).json()
    assert [x["id"] for x in listed["data"]] == [e["id"]] and "secret" not in listed["data"][0]
    async with runtime.db.read() as conn:
        row = (await conn.execute(sa.select(webhook_endpoints))).mappings().one()
    raw = b"".join(str(v).encode() if not isinstance(v, bytes) else v for v in row.values())
    assert e["secret"].encode() not in raw and e["secret"][6:].encode() not in raw
    opened = runtime.keyring.open(row["secret_key_id"], row["secret_sealed"], secret_aad(e["id"]))
    assert opened.decode() == e["secret"]

    # A retry with the same Idempotency-Key replays the first answer, secret included.
    headers = {**auth, **idem()}
    body = {"url": URL, "enabled_events": ["*"]}
    first = await client.post("/v1/webhook_endpoints", json=body, headers=headers)
    second = await client.post("/v1/webhook_endpoints", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content and second.headers["Idempotent-Replayed"] == "true"
    listed = (await client.get("/v1/webhook_endpoints", headers=auth)).json()
    assert len(listed["data"]) == 2


async def test_update_rotate_delete_and_pagination(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ids = [(await create(client, auth))["id"] for _ in range(3)]
    page = (await client.get("/v1/webhook_endpoints?limit=2", headers=auth)).json()
    assert [x["id"] for x in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = await client.get(f"/v1/webhook_endpoints?starting_after={ids[1]}", headers=auth)
    assert [x["id"] for x in rest.json()["data"]] == [ids[0]] and not rest.json()["has_more"]

    r = await client.post(
        f"/v1/webhook_endpoints/{ids[0]}",
        json={
            "url": "https://93.184.216.35/v2",
            "enabled_events": ["refund.succeeded", "refund.succeeded"],
            "enabled": False,
            "description": "v2",
        },
        headers={**auth, **idem()},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["url"] == "https://93.184.216.35/v2" and updated["enabled"] is False
    assert updated["enabled_events"] == ["refund.succeeded"] and updated["description"] == "v2"
    assert updated["updated"] >= updated["created"] and "secret" not in updated
    partial = await client.post(
        f"/v1/webhook_endpoints/{ids[0]}", json={"enabled": True}, headers=auth
    )
    assert partial.json()["enabled"] is True and partial.json()["url"].endswith("/v2")

    gone = await client.delete(f"/v1/webhook_endpoints/{ids[0]}", headers=auth)
    assert gone.status_code == 200
    assert gone.json() == {"id": ids[0], "object": "webhook_endpoint", "deleted": True}
    assert (await client.get(f"/v1/webhook_endpoints/{ids[0]}", headers=auth)).status_code == 404
    assert (await client.delete(f"/v1/webhook_endpoints/{ids[0]}", headers=auth)).status_code == 404

    e = await create(client, auth)  # rotation: the old secret signs for a day unless told
    r = await client.post(f"/v1/webhook_endpoints/{e['id']}/rotate_secret", headers=auth)
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != e["secret"]
    assert abs(rotated["previous_secret_expires_at"] - (time.time() + 86400)) < 5
    r = await client.post(
        f"/v1/webhook_endpoints/{e['id']}/rotate_secret",
        json={"previous_secret_expires_in": 0},
        headers=auth,
    )
    assert r.json()["previous_secret_expires_at"] is None
    too_long = await client.post(
        f"/v1/webhook_endpoints/{e['id']}/rotate_secret",
        json={"previous_secret_expires_in": 86401},
        headers=auth,
    )
    assert too_long.status_code == 400


async def test_validation_refuses_bad_requests(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": URL, "enabled_events": ["payment.fraud_assessed"]}, "enabled_events"),
        ({"url": URL, "enabled_events": ["nope"]}, "enabled_events"),
        ({"url": URL, "enabled_events": []}, "enabled_events"),
        ({"url": "ftp://93.184.216.34/x", "enabled_events": ["*"]}, "url"),
        ({"url": "https:///nohost", "enabled_events": ["*"]}, "url"),
        ({"url": "https://93.184.216.34/#frag", "enabled_events": ["*"]}, "url"),
        ({"enabled_events": ["*"]}, "url"),
        ({"url": URL, "enabled_events": ["*"], "secret": "mine"}, "secret"),
    ]
    for body, param in cases:
        r = await client.post("/v1/webhook_endpoints", json=body, headers=auth)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.text)
    listed = (await client.get("/v1/webhook_endpoints", headers=auth)).json()
    assert listed["data"] == []


async def test_another_merchants_objects_are_404(
    client: httpx.AsyncClient, auth: dict[str, str], merchant: dict[str, Any]
) -> None:
    e = await create(client, auth)
    payment = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    event_id = (await client.get("/v1/events", headers=auth)).json()["data"][0]["id"]
    other = await new_merchant(client, "Other")
    them = {"Authorization": f"Bearer {other['api_key']}"}
    for method, url in [
        ("GET", f"/v1/webhook_endpoints/{e['id']}"),
        ("POST", f"/v1/webhook_endpoints/{e['id']}"),
        ("DELETE", f"/v1/webhook_endpoints/{e['id']}"),
        ("POST", f"/v1/webhook_endpoints/{e['id']}/rotate_secret"),
        ("GET", f"/v1/webhook_endpoints/{e['id']}/deliveries"),
        ("GET", f"/v1/events/{event_id}"),
        ("POST", f"/v1/events/{event_id}/redeliver"),
    ]:
        kw: dict[str, Any] = {"json": {}} if method == "POST" else {}
        r = await client.request(method, url, headers=them, **kw)
        assert r.status_code == 404, (method, url, r.text)
    assert (await client.get("/v1/events", headers=them)).json()["data"] == []
    assert payment.status_code == 202


async def test_events_list_only_public_events_of_the_merchant(
    client: httpx.AsyncClient, auth: dict[str, str], merchant: dict[str, Any], runtime: Runtime
) -> None:
    paid = []
    for _ in range(2):
        r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
        paid.append(r.json())
    async with runtime.db.transaction() as conn:
        internal = await outbox.emit(
            conn,
            type="payment.fraud_assessed",
            obj={"id": paid[0]["id"], "livemode": False, "risk": {}},
            merchant_id=merchant["id"],
            sequence=1,
        )
        succeeded = await outbox.emit(
            conn,
            type="payment.succeeded",
            obj={**paid[0], "status": "succeeded"},
            merchant_id=merchant["id"],
            sequence=2,
        )
    listed = (await client.get("/v1/events", headers=auth)).json()
    types = [e["type"] for e in listed["data"]]
    assert types == ["payment.succeeded", "payment.created", "payment.created"]
    assert listed["data"][0] == succeeded
    only = (await client.get("/v1/events?type=payment.succeeded", headers=auth)).json()
    assert [e["id"] for e in only["data"]] == [succeeded["id"]]
    page = (await client.get("/v1/events?limit=1", headers=auth)).json()
    assert page["has_more"] is True and len(page["data"]) == 1
    one = await client.get(f"/v1/events/{succeeded['id']}", headers=auth)
    assert one.json() == succeeded and one.json()["data"]["object"]["status"] == "succeeded"
    assert (await client.get(f"/v1/events/{internal['id']}", headers=auth)).status_code == 404
    r = await client.post(f"/v1/events/{internal['id']}/redeliver", headers=auth)
    assert r.status_code == 404
