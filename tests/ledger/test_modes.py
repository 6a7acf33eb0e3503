"""Test and live money are kept apart: balances, availability and payouts per mode."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from paygate.ids import now_s
from paygate.ledger import service as ledger
from paygate.ledger.models import Pricing
from paygate.runtime import Runtime
from paygate.settlements import service as settlements
from paygate.settlements.store import LocalObjectStore
from tests.ledger import books

FREE = Pricing(percent_bps=0, fixed={})


async def test_balances_and_payouts_are_per_mode(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    merchant = await books.new_merchant(rt)
    live = await books.new_payment(rt, merchant, 5_000, "eur", livemode=True)
    test = await books.new_payment(rt, merchant, 700, "eur", livemode=False)
    await books.capture(rt, live, 5_000, pricing=FREE)
    await books.capture(rt, test, 700, pricing=FREE)
    # A test refund larger than what test mode has available must not eat into live funds.
    async with rt.db.transaction() as conn:
        await ledger.release_due(conn, now_s() + 1)
    refund = await books.start_refund(rt, test, 700)
    await books.finish_refund(rt, refund, succeeded=True, pricing=FREE)

    async with rt.db.read() as conn:
        assert await ledger.available(conn, merchant, "eur", livemode=True) == 5_000
        assert await ledger.available(conn, merchant, "eur", livemode=False) == 0
        live_balance = await ledger.balance(conn, merchant, True)
        test_balance = await ledger.balance(conn, merchant, False)
    assert live_balance["available"] == [{"amount": 5_000, "currency": "eur"}]
    assert test_balance["available"] == [{"amount": 0, "currency": "eur"}]

    now = now_s() + 1
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    made = await settlements.run_day(rt, day, store=LocalObjectStore(tmp_path), now=now)
    paid = {(s["livemode"], s["status"], s["net"]) for s in made}
    assert (True, "paid", 5_000) in paid
    assert not any(livemode is False and status == "paid" for livemode, status, _ in paid)
    async with rt.db.read() as conn:
        assert await ledger.available(conn, merchant, "eur", livemode=True) == 0
        trial = await ledger.trial_balance(conn)
    assert set(trial["totals"].values()) == {0}
    assert {a["account"].split(":")[1] for a in trial["data"]} == {"live", "test"}
