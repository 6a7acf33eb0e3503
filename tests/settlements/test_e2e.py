"""A settlement end to end: payments and a refund through the real HTTP API, pipeline and bank
simulator (over HTTP), at the merchant's own pricing; then `POST /v1/settlements/run`, the
`settlement.created` event, and a payout file valid against the pain.001.001.03 schema."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx

from paygate.ledger.models import Pricing
from paygate.pipeline import Pipeline
from paygate.runtime import Runtime
from tests.e2e.conftest import bank, bank_url, pipeline  # noqa: F401  (the e2e fixtures)
from tests.e2e.test_ledger_flow import WAIT, check_books, pay, refund
from tests.ledger import books
from tests.settlements.payout_files import validate
from tests.support import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_payments_refund_settlement_and_payout_file(
    client: httpx.AsyncClient,
    runtime: Runtime,
    pipeline: Pipeline,  # noqa: F811
) -> None:
    r = await client.post(
        "/v1/merchants",
        json={
            "name": "Settled Shop",
            "bank_account": {
                "iban": "FR14 2004 1010 0505 0001 3M02 606",
                "bic": "BNPAFRPP",
                "account_holder": "Settled Shop SARL",
            },
            "pricing": {"percent_bps": 150, "fixed": {"eur": 10}, "refund_fees": False},
            "payout_delay_days": 0,
        },
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    merchant = r.json()
    auth = {"Authorization": f"Bearer {merchant['api_key']}"}

    sale = await pay(client, auth, amount=12_345, currency="eur")
    held = await pay(client, auth, amount=8_000, currency="eur", capture=False)
    declined = await pay(client, auth, currency="eur", card={"number": "4000000000000002"})
    assert (sale["status"], held["status"], declined["status"]) == (
        "succeeded",
        "requires_capture",
        "failed",
    )
    r = await client.post(
        f"/v1/payments/{held['id']}/capture", json={"amount": 5_000}, headers={**auth, **WAIT}
    )
    assert r.json()["status"] == "succeeded"
    assert (await refund(client, auth, sale["id"], 2_345))["status"] == "succeeded"
    await check_books(runtime, client, merchant)

    # The merchant's own pricing applied at capture; its refunds keep the fee.
    pricing = Pricing(percent_bps=150, fixed={"eur": 10}, refund_fees=False)
    fees = pricing.fee(12_345, "eur") + pricing.fee(5_000, "eur")
    txns = (await client.get("/v1/balance_transactions", headers=auth)).json()["data"]
    assert sum(t["fee"] for t in txns) == fees

    today = dt.datetime.now(dt.UTC).date().isoformat()
    r = await client.post("/v1/settlements/run", json={"date": today}, headers=ADMIN)
    assert r.status_code == 200, r.text
    [s] = [x for x in r.json()["settlements"] if x["merchant"] == merchant["id"]]
    net = 12_345 + 5_000 - 2_345 - fees
    assert (s["status"], s["gross"], s["refunds"], s["fees"], s["net"]) == (
        "paid",
        17_345,
        2_345,
        fees,
        net,
    )
    assert (await client.get(f"/v1/settlements/{s['id']}", headers=auth)).json() == s
    owed = (await books.owed(runtime, merchant["id"]))["eur"]
    assert (owed["paid_out"], owed["available"], owed["pending"], owed["reserved"]) == (
        net,
        0,
        0,
        0,
    )
    trial = (await client.get("/v1/ledger/trial_balance", headers=ADMIN)).json()
    assert all(total == 0 for total in trial["totals"].values())

    r = await client.get(f"/v1/settlements/{s['id']}/payout_file", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    fields = validate(r.content)
    assert Decimal(fields["amount"]) * 100 == net and fields["currency"] == "EUR"
    assert fields["creditor_iban"] == "FR1420041010050500013M02606"
    assert fields["creditor_bic"] == "BNPAFRPP"
    assert fields["service_level"] == "SEPA"

    await pipeline.settle()
    events = (await client.get("/v1/events?limit=100", headers=auth)).json()["data"]
    created = [e for e in events if e["type"] == "settlement.created"]
    assert [e["data"]["object"]["id"] for e in created] == [s["id"]]
