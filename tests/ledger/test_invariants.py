"""The ledger's invariants, for any sequence of payments (test and live), partial captures,
refunds (succeeded, failed, left pending), per-merchant fees and daily settlements, on SQLite
and PostgreSQL:

- the trial balance is zero per currency;
- per merchant and currency, pending + available + reserved + paid out = captured - refunded -
  fees;
- no payout exceeds the available balance it was paid from (its mode's), and none pays a
  net <= 0;
- the ledger agrees with the payments table (captured and refunded per payment);
- what was paid out is exactly the net of the balance transactions the paid settlements cover.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygate.ids import now_s
from paygate.ledger import service as ledger
from paygate.ledger.models import Pricing
from paygate.ledger.tables import balance_transactions
from paygate.runtime import Runtime
from paygate.settlements import service as settlements
from paygate.settlements.store import LocalObjectStore
from paygate.settlements.tables import settlements as settlements_table
from tests.ledger import books

CURRENCIES = ("usd", "eur", "jpy")

pricings = st.builds(
    Pricing,
    percent_bps=st.integers(0, 1000),
    fixed=st.dictionaries(st.sampled_from(CURRENCIES), st.integers(0, 60), max_size=3),
    refund_fees=st.booleans(),
)

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("pay"),
            st.integers(0, 1),  # merchant
            st.integers(1, 50_000),  # amount
            st.sampled_from(CURRENCIES),
            st.integers(1, 100),  # percent of it captured
            st.booleans(),  # live mode
        ),
        st.tuples(
            st.just("refund"),
            st.integers(0, 30),  # which payment
            st.integers(1, 100),  # percent of what is still refundable
            st.sampled_from(["succeeded", "failed", "pending"]),
        ),
        st.tuples(st.just("finish"), st.integers(0, 30), st.booleans()),
        st.tuples(st.just("settle")),
    ),
    min_size=1,
    max_size=12,
)

FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@given(
    ops=operations,
    pricing=st.tuples(pricings, pricings),
    delays=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    with_bank=st.tuples(st.just(True), st.booleans()),
)
@FAST
async def test_the_books_always_balance(
    runtime: Runtime,
    tmp_path: Path,
    ops: list[tuple[Any, ...]],
    pricing: tuple[Pricing, Pricing],
    delays: tuple[int, int],
    with_bank: tuple[bool, bool],
) -> None:
    rt = runtime
    store = LocalObjectStore(tmp_path / "objects")
    merchants = [await books.new_merchant(rt, bank=b) for b in with_bank]
    paid: list[tuple[str, int]] = []  # (payment, merchant index)
    pending: list[tuple[dict[str, Any], int]] = []
    settled_days = 0
    start = now_s()
    for op in ops:
        if op[0] == "pay":
            _, m, amount, currency, percent, livemode = op
            pid = await books.new_payment(rt, merchants[m], amount, currency, livemode=livemode)
            captured = max(1, amount * percent // 100)
            await books.capture(rt, pid, captured, pricing=pricing[m], delay_days=delays[m])
            paid.append((pid, m))
        elif op[0] == "refund" and paid:
            _, which, percent, outcome = op
            pid, m = paid[which % len(paid)]
            row = next(r for r in await books.payment_rows(rt, merchants[m]) if r["id"] == pid)
            left = row["amount_captured"] - row["amount_refunded"] - row["amount_refund_pending"]
            if left <= 0:
                continue
            refund = await books.start_refund(rt, pid, max(1, left * percent // 100))
            if outcome == "pending":
                pending.append((refund, m))
            else:
                await books.finish_refund(
                    rt, refund, succeeded=outcome == "succeeded", pricing=pricing[m]
                )
        elif op[0] == "finish" and pending:
            _, which, succeeded = op
            refund, m = pending.pop(which % len(pending))
            await books.finish_refund(rt, refund, succeeded=succeeded, pricing=pricing[m])
        elif op[0] == "settle":
            # Each run settles a later day, as the daily job does.
            now = start + settled_days * 86_400
            day = dt.datetime.fromtimestamp(now, dt.UTC).date()
            await settlements.run_day(rt, day, store=store, now=now)
            settled_days += 1
    await check_books(rt, merchants)


async def check_books(rt: Runtime, merchants: list[str]) -> None:
    async with rt.db.read() as conn:
        trial = await ledger.trial_balance(conn)
    assert all(total == 0 for total in trial["totals"].values()), trial["totals"]
    assert await books.payouts_beyond_available(rt) == []
    for merchant_id in merchants:
        owed = await books.owed(rt, merchant_id)
        fees = await books.fees(rt, merchant_id)
        rows = await books.payment_rows(rt, merchant_id)
        expected: dict[str, int] = defaultdict(int)
        for p in rows:
            expected[p["currency"]] += p["amount_captured"] - p["amount_refunded"]
        for currency, fee in fees.items():
            expected[currency] -= fee
        for currency in set(expected) | set(owed):
            assert sum(owed[currency].values()) == expected[currency], (currency, owed[currency])
        clearing = await books.clearing_by_payment(rt, merchant_id)
        for p in rows:
            assert clearing[p["id"]] == {
                "captured": p["amount_captured"],
                "refunded": p["amount_refunded"],
            }
        await check_settlements(rt, merchant_id, owed)


async def check_settlements(rt: Runtime, merchant_id: str, owed: dict[str, dict[str, int]]) -> None:
    s, b = settlements_table.c, balance_transactions.c
    async with rt.db.read() as conn:
        rows = (
            (await conn.execute(sa.select(settlements_table).where(s.merchant_id == merchant_id)))
            .mappings()
            .all()
        )
        paid_out: dict[str, int] = defaultdict(int)
        for row in rows:
            covered = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(b.net), 0)).where(
                        b.settlement_id == row["id"], b.type != "payout"
                    )
                )
            ).one()
            assert row["gross"] - row["refunds"] - row["fees"] == row["net"]
            if row["status"] == "paid":
                assert row["payout_amount"] == row["net"] > 0
                assert int(covered[1]) == row["net"]
                paid_out[row["currency"]] += row["payout_amount"]
            else:
                assert row["payout_amount"] == 0 and covered[0] == 0
    for currency, kinds in owed.items():
        assert kinds["paid_out"] == paid_out[currency]
