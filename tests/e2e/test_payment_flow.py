"""Payments through the real pipeline: API → outbox → relay → fraud → processor → bank."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.e2e.conftest import operations
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}

OUTCOMES = [
    ("4242424242424242", "succeeded", None),
    ("5555555555554444", "succeeded", None),
    ("4000000000000002", "failed", "card_declined"),
    ("4000000000009995", "failed", "insufficient_funds"),
    ("4000000000000069", "failed", "expired_card"),
    ("4000000000000127", "failed", "incorrect_cvc"),
    ("4000000000000119", "failed", "processing_error"),
    ("4000000000009987", "failed", "lost_card"),
    ("4000000000009979", "failed", "stolen_card"),
    ("4100000000000019", "failed", "fraud_suspected"),
    ("4000000000009235", "requires_review", None),
    ("378282246310005", "succeeded", None),
]


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    assert r.headers["Preference-Applied"] == "wait=10"
    payment: dict[str, Any] = r.json()
    return payment


@pytest.mark.parametrize(("number", "status", "code"), OUTCOMES)
async def test_every_test_card(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
    number: str,
    status: str,
    code: str | None,
) -> None:
    p = await pay(client, auth, card={"number": number})
    assert (p["status"], p["failure_code"]) == (status, code)
    ops = await operations(bank, p["id"])
    if code == "fraud_suspected":
        assert ops == []  # declined by screening: the bank never sees it
    elif status == "requires_review":
        assert [(o["operation"], o["status"]) for o in ops] == [("authorize", "approved")]
    else:
        assert [o["operation"] for o in ops] == ["sale"]
    if status == "succeeded":
        assert p["amount_captured"] == 1999
    log = (await client.get(f"/v1/payments/{p['id']}/transaction_log", headers=auth)).json()
    assert log["data"][0]["type"] == "payment.created"
    assert log["data"][-1]["status"] == status


async def test_authorize_then_partial_capture(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, amount=1000, capture=False)
    assert p["status"] == "requires_capture" and p["amount_capturable"] == 1000
    r = await client.post(
        f"/v1/payments/{p['id']}/capture", json={"amount": 600}, headers={**auth, **WAIT}
    )
    assert r.status_code == 200, r.text
    captured = r.json()
    assert captured["status"] == "succeeded"
    assert (captured["amount_captured"], captured["amount_capturable"]) == (600, 0)
    ops = [(o["operation"], o["amount"]) for o in await operations(bank, p["id"])]
    assert ops == [("authorize", 1000), ("capture", 600)]
    again = await client.post(f"/v1/payments/{p['id']}/capture", headers=auth)
    assert again.status_code == 409


async def test_cancel_authorized_payment_voids_it(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, capture=False)
    r = await client.post(f"/v1/payments/{p['id']}/cancel", headers={**auth, **WAIT})
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert [o["operation"] for o in await operations(bank, p["id"])] == ["authorize", "void"]


async def test_partial_and_multiple_refunds(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline, bank: httpx.AsyncClient
) -> None:
    p = await pay(client, auth, amount=1000)
    for amount in (300, 500):
        r = await client.post(
            "/v1/refunds",
            json={"payment": p["id"], "amount": amount},
            headers={**auth, **idem(), **WAIT},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded"
    over = await client.post(
        "/v1/refunds", json={"payment": p["id"], "amount": 201}, headers={**auth, **idem()}
    )
    assert over.status_code == 409
    rest = await client.post(
        "/v1/refunds", json={"payment": p["id"]}, headers={**auth, **idem(), **WAIT}
    )
    assert rest.json()["amount"] == 200 and rest.json()["status"] == "succeeded"
    final = (await client.get(f"/v1/payments/{p['id']}", headers=auth)).json()
    assert final["amount_refunded"] == 1000 and final["status"] == "succeeded"
    refunds = [o for o in await operations(bank, p["id"]) if o["operation"] == "refund"]
    assert sorted(o["amount"] for o in refunds) == [200, 300, 500]


async def test_refund_of_failed_or_pending_payment_refused(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> None:
    failed = await pay(client, auth, card={"number": "4000000000000002"})
    r = await client.post("/v1/refunds", json={"payment": failed["id"]}, headers={**auth, **idem()})
    assert r.status_code == 409
    held = await pay(client, auth, capture=False)
    r = await client.post("/v1/refunds", json={"payment": held["id"]}, headers={**auth, **idem()})
    assert r.status_code == 409


async def test_settled_answers_of_concurrent_waits_are_kept_for_their_replays(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, pipeline: Pipeline
) -> None:
    # Twelve `Prefer: wait` creates at once: each key's record is rewritten with the answer its
    # caller received (those that settle together in one statement), and a replay repeats it.
    cards = [number for number, _, _ in OUTCOMES]
    keys = [idem() for _ in cards]
    updates: list[int] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE IDEMPOTENCY_KEYS"):
            updates.append(len(params) if isinstance(params, list) else 1)

    engine = runtime.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        first = await asyncio.gather(
            *(
                client.post(
                    "/v1/payments",
                    json=payment_body(card={"number": number}),
                    headers={**auth, **key, **WAIT},
                )
                for number, key in zip(cards, keys, strict=True)
            )
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert [r.status_code for r in first] == [200] * len(cards)
    assert [r.json()["status"] for r in first] == [status for _, status, _ in OUTCOMES]
    assert sum(updates) == len(cards)  # every settled answer written, once
    for number, key, answer in zip(cards, keys, first, strict=True):
        again = await client.post(
            "/v1/payments", json=payment_body(card={"number": number}), headers={**auth, **key}
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert (again.status_code, again.content) == (200, answer.content)
