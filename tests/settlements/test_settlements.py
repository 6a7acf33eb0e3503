"""Daily settlements on a real database (SQLite and PostgreSQL), through the admin and merchant
API: what a day pays, once; carry-forward of negative balances; blocked payouts; the cut-off;
the pain.001 file; tenancy."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import sqlalchemy as sa

from paygate.ids import now_s
from paygate.ledger.models import Pricing
from paygate.ledger.tables import balance_transactions, ledger_entries
from paygate.platform.db.tables import outbox
from paygate.runtime import Runtime
from paygate.settlements import service
from paygate.settlements.store import LocalObjectStore
from paygate.settlements.tables import settlements
from tests.ledger import books
from tests.settlements.payout_files import validate
from tests.support import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PRICING = Pricing(percent_bps=200, fixed={"eur": 25}, refund_fees=True)
ACCOUNT = {
    "iban": "DE89 3704 0044 0532 0130 00",
    "bic": "COBADEFFXXX",
    "account_holder": "Acme GmbH",
}


async def merchant_with_keys(
    client: httpx.AsyncClient, *, bank: bool = True, name: str = "Acme"
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "payout_delay_days": 0}
    if bank:
        body["bank_account"] = ACCOUNT
    r = await client.post("/v1/merchants", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    merchant: dict[str, Any] = r.json()
    merchant["auth"] = {"Authorization": f"Bearer {merchant['api_key']}"}
    return merchant


async def charge(rt: Runtime, merchant_id: str, amount: int, currency: str = "eur") -> str:
    pid = await books.new_payment(rt, merchant_id, amount, currency)
    await books.capture(rt, pid, amount, pricing=PRICING)
    return pid


async def refund(rt: Runtime, payment_id: str, amount: int, *, succeeded: bool = True) -> None:
    started = await books.start_refund(rt, payment_id, amount)
    await books.finish_refund(rt, started, succeeded=succeeded, pricing=PRICING)


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


async def run(client: httpx.AsyncClient, date: str) -> list[dict[str, Any]]:
    r = await client.post("/v1/settlements/run", json={"date": date}, headers=ADMIN)
    assert r.status_code == 200, r.text
    made: list[dict[str, Any]] = r.json()["settlements"]
    return made


async def count(rt: Runtime, table: sa.Table) -> int:
    async with rt.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_a_day_settles_once_and_pays_its_net_with_a_valid_file(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    m = await merchant_with_keys(client)
    first = await charge(runtime, m["id"], 10_000)  # fee 200 + 25
    await charge(runtime, m["id"], 5_000)  # fee 100 + 25
    await refund(runtime, first, 4_000)  # returns 90 of the 225 fee
    await refund(runtime, first, 1_000, succeeded=False)  # changes nothing

    [s] = await run(client, today())
    assert (s["status"], s["currency"], s["merchant"]) == ("paid", "eur", m["id"])
    assert (s["gross"], s["refunds"], s["fees"]) == (15_000, 4_000, 350 - 90)
    assert s["net"] == s["payout_amount"] == 15_000 - 4_000 - 260
    assert len(s["balance_transactions"]) == 3

    owed = (await books.owed(runtime, m["id"]))["eur"]
    assert owed["paid_out"] == s["net"] and owed["available"] == 0

    txns = (await client.get("/v1/balance_transactions", headers=m["auth"])).json()["data"]
    payout = [t for t in txns if t["type"] == "payout"]
    assert [(t["source"], t["amount"]) for t in payout] == [(s["id"], -s["net"])]
    assert {t["id"] for t in txns if t["type"] != "payout"} == set(s["balance_transactions"])
    assert all(t["settlement"] == s["id"] for t in txns)

    async with runtime.db.read() as conn:
        events = (
            (await conn.execute(sa.select(outbox.c.payload).where(outbox.c.object_id == s["id"])))
            .scalars()
            .all()
        )
    assert [(e["type"], e["data"]["object"]["net"]) for e in events] == [
        ("settlement.created", s["net"])
    ]

    r = await client.get(s["payout_file"], headers=m["auth"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    fields = validate(r.content)
    assert (fields["amount"], fields["currency"]) == (
        f"{s['net'] // 100}.{s['net'] % 100:02d}",
        "EUR",
    )
    assert fields["creditor_iban"] == "DE89370400440532013000"
    assert fields["msg_id"] == s["id"]

    # Running the day again changes nothing.
    before = [await count(runtime, t) for t in (settlements, ledger_entries, balance_transactions)]
    assert await run(client, today()) == [s]
    after = [await count(runtime, t) for t in (settlements, ledger_entries, balance_transactions)]
    assert before == after


async def test_a_negative_balance_is_carried_forward_never_paid(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Any
) -> None:
    m = await merchant_with_keys(client)
    store = LocalObjectStore(tmp_path / "objects")

    async def settle(days: int) -> dict[str, Any]:
        # From the moment of the run (after the charges it must cover), `days` later.
        now = now_s() + days * 86_400
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        made = await service.run_day(runtime, day, store=store, now=now)
        [s] = [x for x in made if x["merchant"] == m["id"]]
        return s

    pid = await charge(runtime, m["id"], 1_000)  # net 1000 - 45
    assert (await settle(0))["payout_amount"] == 955
    await refund(runtime, pid, 1_000)  # the whole fee back: net -955
    carried = await settle(1)
    assert (carried["status"], carried["net"], carried["payout_amount"]) == (
        "carried_forward",
        -955,
        0,
    )
    assert carried["balance_transactions"] == [] and carried["payout_file"] is None
    assert (await books.owed(runtime, m["id"]))["eur"]["available"] == -955
    await charge(runtime, m["id"], 3_000)  # net 3000 - 85
    paid = await settle(2)
    assert (paid["status"], paid["payout_amount"]) == ("paid", 3_000 - 85 - 955)
    assert len(paid["balance_transactions"]) == 2  # the refund, carried, and the new charge
    assert (await books.owed(runtime, m["id"]))["eur"]["available"] == 0
    r = await client.get(f"/v1/settlements/{carried['id']}/payout_file", headers=m["auth"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "payout_file_missing"


async def test_a_pending_refund_holds_the_payout_back(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    m = await merchant_with_keys(client)
    pid = await charge(runtime, m["id"], 10_000)
    await books.start_refund(runtime, pid, 9_000)  # reserved: available is 10000 - 225 - 9000
    [s] = await run(client, today())
    assert (s["status"], s["payout_amount"], s["net"]) == ("carried_forward", 0, 9_775)
    assert (await books.owed(runtime, m["id"]))["eur"]["paid_out"] == 0


async def test_without_bank_details_the_payout_is_blocked_until_they_are_given(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Any
) -> None:
    m = await merchant_with_keys(client, bank=False)
    await charge(runtime, m["id"], 2_000)
    [s] = await run(client, today())
    assert (s["status"], s["payout_amount"], s["payout_file"]) == ("payout_blocked", 0, None)
    assert (await books.owed(runtime, m["id"]))["eur"]["available"] == 2_000 - 65
    r = await client.get(f"/v1/settlements/{s['id']}/payout_file", headers=m["auth"])
    assert r.status_code == 404

    r = await client.post(f"/v1/merchants/{m['id']}", json={"bank_account": ACCOUNT}, headers=ADMIN)
    assert r.status_code == 200, r.text
    tomorrow = now_s() + 86_400
    day = dt.datetime.fromtimestamp(tomorrow, dt.UTC).date()
    store = LocalObjectStore(tmp_path / "objects")
    [paid] = await service.run_day(runtime, day, store=store, now=tomorrow)
    assert (paid["status"], paid["payout_amount"]) == ("paid", 2_000 - 65)


async def test_funds_settle_after_their_delay_and_by_the_cutoff(
    client: httpx.AsyncClient, runtime: Runtime, tmp_path: Any
) -> None:
    m = await merchant_with_keys(client)
    pid = await books.new_payment(runtime, m["id"], 1_000, "eur")
    await books.capture(runtime, pid, 1_000, pricing=PRICING, delay_days=2)
    store = LocalObjectStore(tmp_path / "objects")
    now = now_s()
    yesterday = (dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(days=1)).date()
    assert await service.run_day(runtime, yesterday, store=store, now=now) == []
    assert await run(client, today()) == []  # still pending
    later = now + 2 * 86_400
    day = dt.datetime.fromtimestamp(later, dt.UTC).date()
    [s] = await service.run_day(runtime, day, store=store, now=later)
    assert (s["status"], s["payout_amount"]) == ("paid", 1_000 - 45)


async def test_reads_are_per_merchant_and_the_admin_sees_all(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    a = await merchant_with_keys(client, name="A")
    b = await merchant_with_keys(client, name="B")
    await charge(runtime, a["id"], 1_000)
    await charge(runtime, a["id"], 700, currency="usd")
    await charge(runtime, b["id"], 2_000)
    made = await run(client, today())
    assert len(made) == 3

    mine = (await client.get("/v1/settlements", headers=a["auth"])).json()
    assert {s["merchant"] for s in mine["data"]} == {a["id"]} and len(mine["data"]) == 2
    first = (await client.get("/v1/settlements?limit=1", headers=a["auth"])).json()
    assert first["has_more"] is True
    after = first["data"][0]["id"]
    rest = (
        await client.get(f"/v1/settlements?limit=1&starting_after={after}", headers=a["auth"])
    ).json()
    assert rest["has_more"] is False and rest["data"][0]["id"] != after

    theirs = next(s for s in made if s["merchant"] == b["id"])
    for path in (f"/v1/settlements/{theirs['id']}", f"/v1/settlements/{theirs['id']}/payout_file"):
        r = await client.get(path, headers=a["auth"])
        assert r.status_code == 404 and r.json()["error"]["code"] == "resource_missing"
        assert (await client.get(path, headers=ADMIN)).status_code == 200
    everyone = (await client.get("/v1/settlements?limit=100", headers=ADMIN)).json()["data"]
    assert len(everyone) == 3
    only_b = (await client.get(f"/v1/settlements?merchant={b['id']}", headers=ADMIN)).json()
    assert [s["id"] for s in only_b["data"]] == [theirs["id"]]


async def test_runs_take_a_past_or_current_day_and_the_admin_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    m = await merchant_with_keys(client)
    r = await client.post("/v1/settlements/run", json={"date": today()}, headers=m["auth"])
    assert r.status_code == 403
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    for bad in ("2026-13-01", "yesterday", future, "2026-1-5"):
        r = await client.post("/v1/settlements/run", json={"date": bad}, headers=ADMIN)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"] == "date"
    r = await client.post("/v1/settlements/run", json={}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "date"


async def test_the_daily_job_settles_yesterday_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    m = await merchant_with_keys(client)
    await charge(runtime, m["id"], 3_000)
    await charge(runtime, m["id"], 1_000)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    noon = int(dt.datetime(*yesterday.timetuple()[:3], 12, tzinfo=dt.UTC).timestamp())
    async with runtime.db.transaction() as conn:
        # The first charge was available yesterday; the second only today.
        b = balance_transactions.c
        first = await conn.scalar(sa.select(sa.func.min(b.id)).where(b.merchant_id == m["id"]))
        await conn.execute(
            balance_transactions.update().where(b.id == first).values(available_on=noon)
        )
    for _ in range(2):
        await service.daily(runtime)
    listed = (await client.get("/v1/settlements", headers=m["auth"])).json()["data"]
    assert [(s["date"], s["payout_amount"]) for s in listed] == [
        (yesterday.isoformat(), 3_000 - 85)
    ]
