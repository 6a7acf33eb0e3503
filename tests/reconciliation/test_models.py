"""The matching rules without a database: every kind of break, the totals, the report parser
(against the simulator's own CSV writer), and properties over random days."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.banksim.models import Operation
from paygate.banksim.report import settlement_csv
from paygate.reconciliation.models import (
    BREAK_KINDS,
    Movement,
    ReportInvalid,
    day_bounds,
    parse_report,
    reconcile,
)

DAY = dt.date(2026, 3, 10)
START, END = day_bounds(DAY)
NOON = START + 12 * 3600


def mv(ref: str, amount: int = 1000, currency: str = "usd", at: int = NOON) -> Movement:
    operation = "refund" if ":refund:" in ref else ref.rsplit(":", 1)[1]
    return Movement(ref, operation, amount, currency, at)


def kinds(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.kind for b in result.breaks]


def test_identical_sides_balance() -> None:
    lines = [mv("pay_a:sale", 1999), mv("pay_b:capture", 500), mv("pay_a:refund:re_1", 300)]
    result = reconcile(DAY, lines, list(reversed(lines)))
    assert result.status == "balanced"
    assert result.breaks == []
    assert result.matched == 3
    assert [(t.currency, t.ours, t.bank) for t in result.totals] == [("usd", 2199, 2199)]
    assert result.by_kind() == dict.fromkeys(BREAK_KINDS, 0)


def test_an_empty_day_balances() -> None:
    result = reconcile(DAY, [], [])
    assert (result.status, result.matched, result.totals) == ("balanced", 0, [])


def test_each_one_sided_kind() -> None:
    ours = [mv("pay_a:sale"), mv("pay_b:sale", 700)]
    bank = [mv("pay_a:sale"), mv("pay_c:sale", 300)]
    result = reconcile(DAY, ours, bank)
    assert kinds(result) == ["missing_at_bank", "missing_in_ledger"]
    missing, unknown = result.breaks
    assert (missing.reference, missing.ours and missing.ours.amount, missing.bank) == (
        "pay_b:sale",
        700,
        None,
    )
    assert (unknown.reference, unknown.ours, unknown.bank and unknown.bank.amount) == (
        "pay_c:sale",
        None,
        300,
    )
    assert result.matched == 1
    assert [(t.ours, t.bank) for t in result.totals] == [(1700, 1300)]
    assert result.status == "breaks"


def test_amount_then_currency_mismatch() -> None:
    ours = [mv("pay_a:sale", 1000), mv("pay_b:sale", 1000), mv("pay_c:sale", 1000)]
    bank = [mv("pay_a:sale", 990), mv("pay_b:sale", 1000, "eur"), mv("pay_c:sale", 5, "eur")]
    result = reconcile(DAY, ours, bank)
    # A different currency is the break, whatever the amounts say.
    assert kinds(result) == ["amount_mismatch", "currency_mismatch", "currency_mismatch"]
    amount = result.breaks[0]
    assert amount.details["difference"] == -10
    assert (amount.ours and amount.ours.amount, amount.bank and amount.bank.amount) == (1000, 990)
    assert {t.currency: (t.ours, t.bank) for t in result.totals} == {
        "eur": (0, 1005),
        "usd": (3000, 990),
    }


def test_duplicates_on_either_side() -> None:
    ours = [mv("pay_a:sale"), mv("pay_b:sale"), mv("pay_b:sale", at=NOON + 5)]
    bank = [mv("pay_a:sale"), mv("pay_a:sale"), mv("pay_b:sale")]
    result = reconcile(DAY, ours, bank)
    assert kinds(result) == ["duplicate", "duplicate"]
    by_side = {b.details["side"]: b for b in result.breaks}
    assert by_side["bank"].reference == "pay_a:sale"
    assert by_side["bank"].bank and by_side["bank"].bank.amount == 1000
    assert by_side["ours"].reference == "pay_b:sale"
    assert by_side["ours"].ours and by_side["ours"].ours.amount == 1000
    assert result.matched == 2  # the first line of each reference still matches


def test_the_neighbouring_days_make_timing_not_missing() -> None:
    before_midnight, after_midnight = START - 1, END
    ours = [mv("pay_a:sale", at=START + 10), mv("pay_b:sale", at=after_midnight)]
    bank = [mv("pay_a:sale", at=before_midnight), mv("pay_b:sale", at=END - 1)]
    result = reconcile(DAY, ours, bank)
    assert kinds(result) == ["timing", "timing"]
    a, b = result.breaks
    assert a.details["other_day"] == "2026-03-09"
    assert b.details["other_day"] == "2026-03-11"
    assert a.ours and a.bank and a.ours.amount == a.bank.amount == 1000
    # Two days away is not a timing difference: it is missing.
    far = reconcile(DAY, [mv("pay_c:sale")], [mv("pay_c:sale", at=START - 86_400 - 1)])
    assert kinds(far) == ["missing_at_bank"]


def test_payment_and_refund_ids_come_from_the_reference() -> None:
    result = reconcile(DAY, [mv("pay_a:refund:re_9"), mv("pay_b:refund:reversal")], [])
    assert [(b.payment_id, b.refund_id) for b in result.breaks] == [
        ("pay_a", "re_9"),
        ("pay_b", None),
    ]


def _op(ref: str, operation: str, amount: int, at_ms: int, status: str = "approved") -> Operation:
    return Operation(
        id=f"op_{ref}",
        reference=ref,
        payment=ref.split(":")[0],
        operation=operation,  # type: ignore[arg-type]
        parent=None,
        amount=amount,
        currency="usd",
        status=status,  # type: ignore[arg-type]
        decline_code=None,
        card_brand=None,
        card_last4=None,
        card_fingerprint=None,
        request_hash="h",
        created_ms=at_ms,
    )


def test_parse_reads_the_simulators_report() -> None:
    csv_text = settlement_csv(
        [
            _op("pay_a:sale", "sale", 1999, NOON * 1000 + 123),
            _op("pay_b:authorize", "authorize", 500, NOON * 1000),  # moves no money
            _op("pay_c:refund:re_1", "refund", 250, (END - 1) * 1000 + 999),
            _op("pay_d:sale", "sale", 100, NOON * 1000, status="declined"),
        ]
    )
    assert parse_report(csv_text) == [
        Movement("pay_a:sale", "sale", 1999, "usd", NOON),
        Movement("pay_c:refund:re_1", "refund", 250, "usd", END - 1),
    ]


def test_parse_ignores_added_columns_and_order() -> None:
    text = (
        "id,time,currency,amount,operation,reference\nop_1,2026-03-10T12:00:00Z,jpy,5,sale,p:sale\n"
    )
    assert parse_report(text) == [Movement("p:sale", "sale", 5, "jpy", NOON)]


@pytest.mark.parametrize(
    "line",
    [
        "pay_a:sale,sale,19.99,usd,2026-03-10T12:00:00Z",
        "pay_a:sale,sale,-5,usd,2026-03-10T12:00:00Z",
        "pay_a:sale,sale,5,USD1,2026-03-10T12:00:00Z",
        "pay_a:sale,void,5,usd,2026-03-10T12:00:00Z",
        "pay_a:sale,sale,5,usd,2026-03-10T12:00:00",
        "pay_a:sale,sale,5,usd,yesterday",
        ",sale,5,usd,2026-03-10T12:00:00Z",
        "pay_a:sale,sale,5",
        "pay_a:sale,sale,5,usd",
    ],
)
def test_parse_refuses_a_line_it_cannot_read(line: str) -> None:
    with pytest.raises(ReportInvalid, match="line 2"):
        parse_report(f"reference,operation,amount,currency,time\n{line}\n")


def test_parse_refuses_a_report_without_its_columns() -> None:
    with pytest.raises(ReportInvalid, match="amount"):
        parse_report("reference,operation,currency,time\n")
    with pytest.raises(ReportInvalid):
        parse_report("")


# Properties over random days.

references = st.builds(
    lambda n, op: f"pay_{n}:{op}",
    st.integers(0, 10_000),
    st.sampled_from(["sale", "capture", "refund:re_1"]),
)
movements = st.lists(
    st.builds(
        lambda ref, amount, cur, at: mv(ref, amount, cur, at),
        references,
        st.integers(1, 10**9),
        st.sampled_from(["usd", "eur", "jpy"]),
        st.integers(START, END - 1),
    ),
    unique_by=lambda m: m.reference,
    max_size=30,
)


@given(lines=movements)
def test_a_day_always_matches_itself(lines: list[Movement]) -> None:
    result = reconcile(DAY, lines, lines)
    assert result.status == "balanced"
    assert result.matched == len(lines)
    assert all(t.ours == t.bank for t in result.totals)


@given(lines=movements, data=st.data())
def test_each_removed_line_is_exactly_one_break_and_its_amount(
    lines: list[Movement], data: st.DataObject
) -> None:
    gone_at_bank = data.draw(st.sets(st.sampled_from(lines)) if lines else st.just(set()))
    bank = [m for m in lines if m not in gone_at_bank]
    result = reconcile(DAY, lines, bank)
    assert sorted(b.reference for b in result.breaks) == sorted(m.reference for m in gone_at_bank)
    assert all(b.kind == "missing_at_bank" for b in result.breaks)
    assert result.matched == len(bank)
    for t in result.totals:
        lost = sum(m.signed for m in gone_at_bank if m.currency == t.currency)
        assert t.ours - t.bank == lost
    assert (result.status == "balanced") == (not gone_at_bank)
