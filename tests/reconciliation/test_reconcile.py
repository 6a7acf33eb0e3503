"""A day's payments through the real pipeline and bank simulator, reconciled against the bank's
report over HTTP, on SQLite and PostgreSQL: a clean day balances; each fault injected in the
bank's store or in our ledger is recorded as exactly one break of its kind, with its amounts."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.ledger import models as ledger_models
from paygate.ledger import repository as ledger_repository
from paygate.ledger.tables import ledger_entries, ledger_postings
from paygate.pipeline import Pipeline
from paygate.reconciliation.fetch import BankReportUnavailable, HttpReportFetcher
from paygate.reconciliation.models import day_bounds
from paygate.reconciliation.service import daily, reconcile_day
from paygate.reconciliation.tables import reconciliation_breaks, reconciliation_runs
from paygate.runtime import Runtime
from tests.reconciliation.conftest import BankStore
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def day_of_payments(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, str]:
    """A sale, an authorization captured in part, a partial refund, and a decline: three
    movements of money at the bank (1999 + 1500 - 500), one without."""
    sale = await pay(client, auth, amount=1999)
    assert sale["status"] == "succeeded"
    held = await pay(client, auth, amount=2000, capture=False)
    assert held["status"] == "requires_capture"
    r = await client.post(
        f"/v1/payments/{held['id']}/capture",
        json={"amount": 1500},
        headers={**auth, **idem(), **WAIT},
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    r = await client.post(
        "/v1/refunds",
        json={"payment": sale["id"], "amount": 500},
        headers={**auth, **idem(), **WAIT},
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    declined = await pay(client, auth, card={"number": "4000000000000002"})
    assert declined["status"] == "failed"
    return {"sale": sale["id"], "captured": held["id"], "refund": r.json()["id"]}


@pytest.fixture
async def day(
    client: httpx.AsyncClient, auth: dict[str, str], pipeline: Pipeline
) -> dict[str, str]:
    return await day_of_payments(client, auth)


def only_break(result: dict[str, Any]) -> dict[str, Any]:
    assert result["status"] == "breaks"
    assert len(result["breaks"]) == 1, result["breaks"]
    found: dict[str, Any] = result["breaks"][0]
    assert result["breaks_by_kind"][found["kind"]] == 1
    assert sum(result["breaks_by_kind"].values()) == 1
    return found


def totals(result: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {t["currency"]: (t["ours"], t["bank"]) for t in result["totals"]}


async def test_a_clean_day_balances(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher
) -> None:
    result = await reconcile_day(runtime, today(), fetch)
    assert result["status"] == "balanced", result["breaks"]
    assert result["breaks"] == []
    assert set(result["breaks_by_kind"].values()) == {0}
    assert result["matched"] == result["bank_rows"] == result["ledger_rows"] == 3
    assert result["totals"] == [{"currency": "usd", "ours": 2999, "bank": 2999, "difference": 0}]
    # Nothing moved on the neighbouring day.
    yesterday = await reconcile_day(runtime, today() - dt.timedelta(days=1), fetch)
    assert (yesterday["status"], yesterday["matched"], yesterday["totals"]) == ("balanced", 0, [])


async def test_a_movement_the_bank_did_not_report(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    ref = f"{day['sale']}:refund:{day['refund']}"
    assert bank_store.execute("DELETE FROM operations WHERE reference = ?", ref) == 1
    result = await reconcile_day(runtime, today(), fetch)
    found = only_break(result)
    assert found["kind"] == "missing_at_bank"
    assert (found["reference"], found["payment"], found["refund"]) == (
        ref,
        day["sale"],
        day["refund"],
    )
    assert (found["operation"], found["our_amount"], found["our_currency"]) == (
        "refund",
        500,
        "usd",
    )
    assert (found["bank_amount"], found["bank_currency"]) == (None, None)
    assert totals(result) == {"usd": (2999, 3499)}
    assert result["matched"] == 2


async def test_a_movement_we_have_no_record_of(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    template = bank_store.row(f"{day['sale']}:sale")
    bank_store.execute(
        "INSERT INTO operations (id, reference, payment, operation, amount, currency, status, "
        "request_hash, created_ms) VALUES ('op_x', 'pay_stranger:sale', 'pay_stranger', 'sale', "
        "777, 'usd', 'approved', 'h', ?)",
        template["created_ms"],
    )
    found = only_break(await reconcile_day(runtime, today(), fetch))
    assert found["kind"] == "missing_in_ledger"
    assert (found["reference"], found["payment"], found["refund"]) == (
        "pay_stranger:sale",
        "pay_stranger",
        None,
    )
    assert (found["our_amount"], found["bank_amount"], found["bank_currency"]) == (None, 777, "usd")


async def test_an_amount_the_bank_changed(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    ref = f"{day['captured']}:capture"
    bank_store.execute("UPDATE operations SET amount = 1490 WHERE reference = ?", ref)
    result = await reconcile_day(runtime, today(), fetch)
    found = only_break(result)
    assert (found["kind"], found["reference"], found["operation"]) == (
        "amount_mismatch",
        ref,
        "capture",
    )
    assert (found["our_amount"], found["bank_amount"]) == (1500, 1490)
    assert found["details"]["difference"] == -10
    assert totals(result) == {"usd": (2999, 2989)}


async def test_a_currency_the_bank_changed(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    ref = f"{day['sale']}:sale"
    bank_store.execute("UPDATE operations SET currency = 'eur' WHERE reference = ?", ref)
    result = await reconcile_day(runtime, today(), fetch)
    found = only_break(result)
    assert found["kind"] == "currency_mismatch"
    assert (found["our_amount"], found["our_currency"]) == (1999, "usd")
    assert (found["bank_amount"], found["bank_currency"]) == (1999, "eur")
    assert totals(result) == {"eur": (0, 1999), "usd": (2999, 1000)}


async def test_a_line_the_bank_reported_twice(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher
) -> None:
    ref = f"{day['sale']}:sale"

    async def twice(when: dt.date) -> str:
        # The simulator keeps a reference once: its report repeating a line is a fault of
        # the report, injected here on the real report fetched over HTTP.
        text = await fetch(when)
        lines = text.splitlines(keepends=True)
        return "".join(lines + [line for line in lines if line.startswith(ref + ",")])

    result = await reconcile_day(runtime, today(), twice)
    found = only_break(result)
    assert (found["kind"], found["reference"]) == ("duplicate", ref)
    assert (found["our_amount"], found["bank_amount"]) == (None, 1999)
    assert found["details"]["side"] == "bank" and found["details"]["count"] == 2
    assert result["matched"] == 3
    assert totals(result) == {"usd": (2999, 4998)}


async def test_a_capture_we_booked_twice(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher
) -> None:
    async with runtime.db.transaction() as conn:
        entry = (
            (
                await conn.execute(
                    sa.select(ledger_entries).where(
                        ledger_entries.c.payment_id == day["captured"],
                        ledger_entries.c.kind == "capture",
                    )
                )
            )
            .mappings()
            .one()
        )
        await ledger_repository.post(
            conn,
            kind="capture",
            merchant_id=entry["merchant_id"],
            currency="usd",
            payment_id=day["captured"],
            postings=ledger_models.capture(entry["merchant_id"], "usd", 1500, 74, livemode=False),
        )
    result = await reconcile_day(runtime, today(), fetch)
    found = only_break(result)
    assert (found["kind"], found["reference"]) == ("duplicate", f"{day['captured']}:capture")
    assert (found["our_amount"], found["our_currency"], found["bank_amount"]) == (1500, "usd", None)
    assert found["details"]["side"] == "ours" and found["details"]["count"] == 2
    assert totals(result) == {"usd": (4499, 2999)}


async def move_booking(runtime: Runtime, payment_id: str, to: int) -> None:
    async with runtime.db.transaction() as conn:
        ids = (
            (
                await conn.execute(
                    sa.select(ledger_entries.c.id).where(
                        ledger_entries.c.payment_id == payment_id,
                        ledger_entries.c.kind == "capture",
                    )
                )
            )
            .scalars()
            .all()
        )
        assert len(ids) == 1
        await conn.execute(
            ledger_entries.update().where(ledger_entries.c.id == ids[0]).values(created=to)
        )
        await conn.execute(
            ledger_postings.update().where(ledger_postings.c.entry_id == ids[0]).values(created=to)
        )


async def test_a_booking_across_midnight_is_timing_on_both_days(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher
) -> None:
    yesterday = today() - dt.timedelta(days=1)
    _, end = day_bounds(yesterday)
    await move_booking(runtime, day["sale"], end - 1)  # booked at 23:59:59 the day before
    ref = f"{day['sale']}:sale"

    result = await reconcile_day(runtime, today(), fetch)
    found = only_break(result)
    assert (found["kind"], found["reference"]) == ("timing", ref)
    assert (found["our_amount"], found["bank_amount"]) == (1999, 1999)
    assert found["details"]["other_day"] == yesterday.isoformat()
    assert totals(result) == {"usd": (1000, 2999)}

    before = await reconcile_day(runtime, yesterday, fetch)
    found = only_break(before)
    assert (found["kind"], found["reference"]) == ("timing", ref)
    assert found["details"]["other_day"] == today().isoformat()
    assert totals(before) == {"usd": (1999, 0)}


async def test_a_bank_movement_across_midnight_is_timing(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    start, _ = day_bounds(today())
    ref = f"{day['captured']}:capture"
    bank_store.execute(
        "UPDATE operations SET created_ms = ? WHERE reference = ?", start * 1000 - 1, ref
    )
    found = only_break(await reconcile_day(runtime, today(), fetch))
    assert (found["kind"], found["reference"]) == ("timing", ref)
    assert (found["our_amount"], found["bank_amount"]) == (1500, 1500)
    assert found["details"]["other_day"] == (today() - dt.timedelta(days=1)).isoformat()


async def stored(runtime: Runtime, when: dt.date) -> tuple[int, int]:
    async with runtime.db.read() as conn:
        runs = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(reconciliation_runs)
            .where(reconciliation_runs.c.date == when.isoformat())
        )
        breaks = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(reconciliation_breaks)
            .where(reconciliation_breaks.c.date == when.isoformat())
        )
    return int(runs or 0), int(breaks or 0)


async def test_running_a_day_again_replaces_its_result(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    ref = f"{day['sale']}:sale"
    bank_store.execute("UPDATE operations SET amount = amount + 1 WHERE reference = ?", ref)
    bank_store.execute("DELETE FROM operations WHERE reference = ?", f"{day['captured']}:capture")
    first = await reconcile_day(runtime, today(), fetch)
    again = await reconcile_day(runtime, today(), fetch)
    assert len(first["breaks"]) == len(again["breaks"]) == 2
    assert again["id"] != first["id"]
    assert await stored(runtime, today()) == (1, 2)
    # Runs of one day at the same time: one replaces the other whole, never a mix.
    runs = await asyncio.gather(*(reconcile_day(runtime, today(), fetch) for _ in range(3)))
    assert len({r["id"] for r in runs}) == 3
    assert await stored(runtime, today()) == (1, 2)

    bank_store.execute("UPDATE operations SET amount = amount - 1 WHERE reference = ?", ref)
    fixed = await reconcile_day(runtime, today(), fetch)
    assert [b["kind"] for b in fixed["breaks"]] == ["missing_at_bank"]
    assert await stored(runtime, today()) == (1, 1)


async def test_an_unreachable_bank_stores_nothing(runtime: Runtime, day: dict[str, str]) -> None:
    nowhere = HttpReportFetcher("http://127.0.0.1:9", "bank_sk_dev", attempts=2)
    try:
        with pytest.raises(BankReportUnavailable):
            await reconcile_day(runtime, today(), nowhere)
    finally:
        await nowhere.aclose()

    async def garbled(_: dt.date) -> str:
        return "reference,operation,amount,currency,time\npay_x:sale,sale,12.5,usd,x\n"

    with pytest.raises(BankReportUnavailable, match="cannot be read"):
        await reconcile_day(runtime, today(), garbled)
    assert await stored(runtime, today()) == (0, 0)


async def test_the_daily_job_runs_yesterday_once_and_never_raises(
    runtime: Runtime, day: dict[str, str], fetch: HttpReportFetcher, bank_store: BankStore
) -> None:
    yesterday = today() - dt.timedelta(days=1)
    _, end = day_bounds(yesterday)
    await move_booking(runtime, day["sale"], end - 1)
    calls: list[dt.date] = []

    async def counting(when: dt.date) -> str:
        calls.append(when)
        return await fetch(when)

    await daily(runtime, counting)
    assert sorted(calls) == [yesterday - dt.timedelta(days=1), yesterday, today()]
    assert await stored(runtime, yesterday) == (1, 1)  # the timing break
    assert await stored(runtime, today()) == (0, 0)

    tried: list[dt.date] = []

    async def failing(when: dt.date) -> str:
        tried.append(when)
        raise BankReportUnavailable("the bank is down")

    await daily(runtime, failing)  # yesterday is done: nothing fetched
    assert tried == []
    async with runtime.db.transaction() as conn:
        await conn.execute(reconciliation_breaks.delete())
        await conn.execute(reconciliation_runs.delete())
    await daily(runtime, failing)  # fails, logged, not raised; tried again at the next check
    assert tried == [yesterday - dt.timedelta(days=1)]
    assert await stored(runtime, yesterday) == (0, 0)
