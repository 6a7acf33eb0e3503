"""The ledger through the real pipeline: captures, partial refunds and failures post balanced
entries in the same transactions as the payments they follow, and the books agree with the
payments table."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.ledger import service as ledger
from paygate.ledger.models import Pricing
from paygate.pipeline import Pipeline
from paygate.platform.db.tables import payments
from paygate.runtime import Runtime
from tests.conftest import ADMIN_KEY, new_merchant
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def refund(
    client: httpx.AsyncClient, auth: dict[str, str], payment: str, amount: int
) -> dict[str, Any]:
    r = await client.post(
        "/v1/refunds",
        json={"payment": payment, "amount": amount},
        headers={**auth, **idem(), **WAIT},
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def check_books(
    runtime: Runtime, client: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    """The trial balance is zero per currency; per currency, what the merchant is owed (pending,
    available, reserved and paid out) equals captured - refunded - net fees, as the payments
    table has them."""
    trial = (
        await client.get(
            "/v1/ledger/trial_balance", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    ).json()
    assert trial["totals"] and all(total == 0 for total in trial["totals"].values())
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}
    txns = (await client.get("/v1/balance_transactions?limit=100", headers=auth)).json()["data"]
    async with runtime.db.read() as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(payments).where(payments.c.merchant_id == merchant["id"])
                )
            )
            .mappings()
            .all()
        )
        accounts = await ledger.repository.account_balances(conn, merchant["id"])
    owed: dict[str, int] = defaultdict(int)
    for row in accounts:
        owed[row.currency] -= int(row.balance)
    expected: dict[str, int] = defaultdict(int)
    for p in rows:
        expected[p["currency"]] += p["amount_captured"] - p["amount_refunded"]
    for t in txns:
        expected[t["currency"]] -= t["fee"]
    assert {c: v for c, v in owed.items() if v} == {c: v for c, v in expected.items() if v}
    balance = (await client.get("/v1/balance", headers=auth)).json()
    shown: dict[str, int] = defaultdict(int)
    for entry in balance["pending"] + balance["available"] + balance["reserved"]:
        shown[entry["currency"]] += entry["amount"]
    assert {c: v for c, v in shown.items() if v} == {c: v for c, v in owed.items() if v}


async def test_captures_refunds_and_fees_balance(
    client: httpx.AsyncClient, runtime: Runtime, pipeline: Pipeline
) -> None:
    merchant = await new_merchant(client, "Books")
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}
    sale = await pay(client, auth, amount=10_000)
    held = await pay(client, auth, amount=5_000, capture=False)
    await pay(client, auth, card={"number": "4000000000000002"})  # declined: no money moves
    r = await client.post(
        f"/v1/payments/{held['id']}/capture", json={"amount": 3_000}, headers={**auth, **WAIT}
    )
    assert r.json()["status"] == "succeeded"
    await refund(client, auth, sale["id"], 2_500)
    await refund(client, auth, sale["id"], 7_500)
    await check_books(runtime, client, merchant)

    txns = (await client.get("/v1/balance_transactions", headers=auth)).json()["data"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for t in txns:
        by_type.setdefault(t["type"], []).append(t)
    pricing = Pricing()
    charges = {t["source"]: t for t in by_type["charge"]}
    assert charges[sale["id"]]["fee"] == pricing.fee(10_000, "usd")
    assert charges[held["id"]]["amount"] == 3_000  # the captured part only
    # Two partial refunds return the whole fee of the sale between them, exactly.
    assert -sum(t["fee"] for t in by_type["refund"]) == charges[sale["id"]]["fee"]


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_days_keep_the_books_balanced(
    client: httpx.AsyncClient, runtime: Runtime, pipeline: Pipeline, seed: int
) -> None:
    rng = random.Random(seed)
    merchant = await new_merchant(client, f"Random {seed}")
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}
    for _ in range(6):
        amount = rng.randint(1, 50_000)
        currency = rng.choice(["usd", "eur", "jpy", "kwd"])
        card = rng.choice(["4242424242424242", "4242424242424242", "4000000000009995"])
        p = await pay(
            client,
            auth,
            amount=amount,
            currency=currency,
            card={"number": card},
            capture=rng.random() < 0.7,
        )
        if p["status"] == "requires_capture":
            part = rng.randint(1, amount)
            await client.post(
                f"/v1/payments/{p['id']}/capture", json={"amount": part}, headers={**auth, **WAIT}
            )
            p = (await client.get(f"/v1/payments/{p['id']}", headers=auth)).json()
        while p["status"] == "succeeded" and rng.random() < 0.6:
            left = p["amount_captured"] - p["amount_refunded"]
            if left <= 0:
                break
            await refund(client, auth, p["id"], rng.randint(1, left))
            p = (await client.get(f"/v1/payments/{p['id']}", headers=auth)).json()
    await check_books(runtime, client, merchant)
