"""Strong consistency on PostgreSQL, with separate connection pools as separate processes would
have: concurrent runs of one day pay each merchant once, and a refund racing a settlement never
lets a payout exceed the available balance."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from paygate.ids import new_id, now_s
from paygate.ledger import service as ledger
from paygate.ledger.tables import ledger_entries
from paygate.runtime import Runtime
from paygate.settlements import service
from paygate.settlements.store import LocalObjectStore
from paygate.settlements.tables import settlements
from tests.conftest import TEMPLATE_DB, _admin_sql, _with_database, make_settings
from tests.ledger import books
from tests.settlements.test_settlements import charge

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_sql(postgres_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    yield _with_database(postgres_server, name)
    asyncio.run(_admin_sql(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def runtimes(pg_url: str, tmp_path: Path) -> AsyncIterator[list[Runtime]]:
    """Three runtimes on one database: three engines, as three scheduler processes."""
    rts = [Runtime.from_settings(make_settings(tmp_path, pg_url)) for _ in range(3)]
    yield rts
    for rt in rts:
        await rt.close()


async def test_concurrent_runs_of_a_day_pay_each_merchant_once(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    rt = runtimes[0]
    merchants = [await books.new_merchant(rt, name=f"M{i}") for i in range(4)]
    for merchant_id in merchants:
        for currency in ("eur", "usd"):
            await charge(rt, merchant_id, 5_000, currency)
    store = LocalObjectStore(tmp_path / "objects")
    now = now_s()
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    results = await asyncio.gather(
        *(service.run_day(r, day, store=store, now=now) for r in runtimes)
    )
    assert all(len(made) == 8 for made in results)
    assert results[0] == results[1] == results[2]  # every run answers the same settlements
    async with rt.db.read() as conn:
        paid = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(settlements)
            .where(settlements.c.status == "paid")
        )
        payouts = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(ledger_entries)
            .where(ledger_entries.c.kind == "payout")
        )
    assert (paid, payouts) == (8, 8)
    for merchant_id in merchants:
        owed = await books.owed(rt, merchant_id)
        assert {c: (k["paid_out"], k["available"]) for c, k in owed.items()} == {
            "eur": (5_000 - 125, 0),  # 2 % + 25 cents
            "usd": (5_000 - 100, 0),  # 2 %, no fixed part in dollars
        }
    assert await books.payouts_beyond_available(rt) == []


async def test_a_refund_racing_a_settlement_never_lets_the_payout_exceed_the_balance(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    refunder, settler = runtimes[0], runtimes[1]
    merchant_id = await books.new_merchant(refunder)
    pid = await charge(refunder, merchant_id, 10_000)  # available 10000 - 225
    store = LocalObjectStore(tmp_path / "objects")
    now = now_s()
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    refund = {
        "id": new_id("re"),
        "merchant_id": merchant_id,
        "livemode": False,
        "payment_id": pid,
        "amount": 9_000,
        "currency": "eur",
    }
    async with refunder.db.transaction() as conn:
        await ledger.record_refund_reserved(conn, refund)
        # The settlement starts while the reservation is written but not yet committed: it
        # must wait for it, and then see it.
        settling = asyncio.create_task(service.run_day(settler, day, store=store, now=now))
        await asyncio.sleep(0.5)
        assert not settling.done()
    [s] = await settling
    assert (s["status"], s["payout_amount"]) == ("carried_forward", 0)
    assert await books.payouts_beyond_available(settler) == []
    owed = (await books.owed(settler, merchant_id))["eur"]
    assert (owed["available"], owed["reserved"], owed["paid_out"]) == (775, 9_000, 0)


async def test_refunds_and_runs_racing_keep_every_payout_within_the_balance(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    rt = runtimes[0]
    store = LocalObjectStore(tmp_path / "objects")
    merchant_id = await books.new_merchant(rt)
    for round_ in range(6):
        pid = await charge(rt, merchant_id, 4_000)
        now = now_s() + round_ * 86_400  # after the charge, so that it is covered
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        refund = {
            "id": new_id("re"),
            "merchant_id": merchant_id,
            "livemode": False,
            "payment_id": pid,
            "amount": 3_900,
            "currency": "eur",
        }

        async def reserve(r: Runtime, refund: dict[str, object] = refund) -> None:
            async with r.db.transaction() as conn:
                await ledger.record_refund_reserved(conn, refund)

        await asyncio.gather(
            service.run_day(runtimes[1], day, store=store, now=now), reserve(runtimes[2])
        )
    assert await books.payouts_beyond_available(rt) == []
    async with rt.db.read() as conn:
        trial = await ledger.trial_balance(conn)
    assert all(total == 0 for total in trial["totals"].values())
