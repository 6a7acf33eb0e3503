"""The payments resource over HTTP, on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import new_merchant
from tests.support import idem, payment_body


async def test_create_answers_202_pending(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    p = r.json()
    assert p["status"] == "pending"
    assert p["object"] == "payment"
    assert p["id"].startswith("pay_")
    assert p["amount"] == 1999 and p["currency"] == "usd"
    assert p["livemode"] is False
    assert p["payment_method"] == {
        "type": "card",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": p["payment_method"]["card"]["fingerprint"],
        },
    }
    got = await client.get(f"/v1/payments/{p['id']}", headers=auth)
    assert got.json() == p


async def test_create_writes_log_and_event(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Any
) -> None:
    import sqlalchemy as sa

    from paygate.platform.db.tables import outbox

    p = (await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})).json()
    log = (await client.get(f"/v1/payments/{p['id']}/transaction_log", headers=auth)).json()
    assert [(e["type"], e["status"]) for e in log["data"]] == [("payment.created", "pending")]
    async with runtime.db.read() as conn:
        events = (await conn.execute(sa.select(outbox).where(outbox.c.object_id == p["id"]))).all()
    assert [(e.type, e.sequence) for e in events] == [("payment.created", 1)]
    assert events[0].payload["data"]["object"] == p


async def test_list_paginates_newest_first_and_filters(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ids = []
    for amount in (100, 200, 300, 400, 500):
        r = await client.post(
            "/v1/payments", json=payment_body(amount=amount), headers={**auth, **idem()}
        )
        ids.append(r.json()["id"])
    first = (await client.get("/v1/payments?limit=2", headers=auth)).json()
    assert [p["id"] for p in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    nxt = (await client.get(f"/v1/payments?limit=2&starting_after={ids[3]}", headers=auth)).json()
    assert [p["id"] for p in nxt["data"]] == [ids[2], ids[1]]
    back = (await client.get(f"/v1/payments?limit=2&ending_before={ids[1]}", headers=auth)).json()
    assert [p["id"] for p in back["data"]] == [ids[3], ids[2]]
    last = (await client.get(f"/v1/payments?limit=10&starting_after={ids[1]}", headers=auth)).json()
    assert [p["id"] for p in last["data"]] == [ids[0]] and last["has_more"] is False
    canceled = await client.post(f"/v1/payments/{ids[0]}/cancel", headers=auth)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    only = (await client.get("/v1/payments?status=canceled", headers=auth)).json()
    assert [p["id"] for p in only["data"]] == [ids[0]]
    created = only["data"][0]["created"]
    ranged = (
        await client.get(
            f"/v1/payments?created[gte]={created}&created[lte]={created}", headers=auth
        )
    ).json()
    assert len(ranged["data"]) >= 1
    none = (await client.get(f"/v1/payments?created[gt]={created + 10}", headers=auth)).json()
    assert none["data"] == []


async def test_cancel_only_before_processing(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    p = (await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})).json()
    r = await client.post(
        f"/v1/payments/{p['id']}/cancel",
        headers=auth,
        json={"cancellation_reason": "requested_by_customer"},
    )
    assert r.json()["status"] == "canceled"
    again = await client.post(f"/v1/payments/{p['id']}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "invalid_request_error"
    log = (await client.get(f"/v1/payments/{p['id']}/transaction_log", headers=auth)).json()
    assert [e["type"] for e in log["data"]] == ["payment.created", "payment.canceled"]


async def test_capture_and_refund_refused_in_wrong_state(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    p = (await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})).json()
    capture = await client.post(f"/v1/payments/{p['id']}/capture", headers=auth)
    assert capture.status_code == 409
    assert capture.json()["error"]["code"] == "invalid_state"
    refund = await client.post("/v1/refunds", json={"payment": p["id"]}, headers={**auth, **idem()})
    assert refund.status_code == 409
    assert refund.json()["error"]["type"] == "invalid_request_error"


async def test_tenancy_another_merchants_payment_is_404(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    p = (await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})).json()
    other = await new_merchant(client, "Other")
    theirs = {"Authorization": f"Bearer {other['api_key']}"}
    for method, path in (
        ("GET", f"/v1/payments/{p['id']}"),
        ("GET", f"/v1/payments/{p['id']}/transaction_log"),
        ("POST", f"/v1/payments/{p['id']}/cancel"),
        ("POST", f"/v1/payments/{p['id']}/capture"),
    ):
        r = await client.request(method, path, headers=theirs)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "resource_missing"
    listed = (await client.get("/v1/payments", headers=theirs)).json()
    assert listed["data"] == []
    refund = await client.post(
        "/v1/refunds", json={"payment": p["id"]}, headers={**theirs, **idem()}
    )
    assert refund.status_code == 404


async def test_customer_created_then_reused_by_email(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = payment_body(customer={"email": "jenny@example.com", "name": "Jenny Rosen"})
    a = (await client.post("/v1/payments", json=body, headers={**auth, **idem()})).json()
    b = (await client.post("/v1/payments", json=body, headers={**auth, **idem()})).json()
    assert a["customer"] and a["customer"] == b["customer"]
    c = (await client.get(f"/v1/customers/{a['customer']}", headers=auth)).json()
    assert c["email"] == "jenny@example.com" and c["object"] == "customer"
    by_id = payment_body(customer={"id": a["customer"]})
    d = (await client.post("/v1/payments", json=by_id, headers={**auth, **idem()})).json()
    assert d["customer"] == a["customer"]
    unknown = await client.post(
        "/v1/payments", json=payment_body(customer={"id": "cus_nope"}), headers={**auth, **idem()}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "customer.id"
    listed = (
        await client.get("/v1/payments", params={"customer": a["customer"]}, headers=auth)
    ).json()
    assert {p["id"] for p in listed["data"]} == {a["id"], b["id"], d["id"]}
