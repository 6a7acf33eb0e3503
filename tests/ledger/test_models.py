"""Ledger rules: every entry balances; fees round half up; partial fee returns add up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paygate.ledger import models
from paygate.ledger.models import Pricing, fee_returned

amounts = st.integers(min_value=1, max_value=10**11)


def test_fee_rounds_half_up_and_the_fixed_part_is_per_currency() -> None:
    pricing = Pricing(percent_bps=290, fixed={"usd": 30})
    assert pricing.fee(1000, "usd") == 29 + 30  # 2.9 % of $10.00 is 29 cents, plus 30 cents
    assert pricing.fee(20, "usd") == 20  # never more than the amount
    assert Pricing(percent_bps=250, fixed={}).fee(10, "usd") == 0  # 0.25 rounds to 0
    assert Pricing(percent_bps=250, fixed={}).fee(20, "usd") == 1  # 0.5 rounds half up to 1
    assert pricing.fee(1000, "jpy") == 29  # no fixed amount stated for yen: none is charged


@given(
    fee=st.integers(0, 10**9),
    captured=amounts,
    cuts=st.lists(st.integers(1, 100), min_size=1, max_size=12),
)
def test_partial_fee_returns_add_up_to_the_whole(fee: int, captured: int, cuts: list[int]) -> None:
    # Split the captured amount into refunds in the proportions `cuts`, the last takes the rest.
    total = sum(cuts)
    parts = [captured * c // total for c in cuts[:-1]]
    parts.append(captured - sum(parts))
    refunded, returned = 0, 0
    for part in parts:
        back = fee_returned(fee, captured, refunded, part)
        assert back >= 0
        returned += back
        refunded += part
    assert returned == fee


@given(
    mid=st.just("acct_1"),
    amount=amounts,
    fee=st.integers(0, 10**6),
    kind=st.sampled_from(["capture", "release", "reserve", "refund", "failed", "payout"]),
)
def test_every_entry_balances(mid: str, amount: int, fee: int, kind: str) -> None:
    fee = min(fee, amount)
    postings = {
        "capture": models.capture(mid, "usd", amount, fee, livemode=False),
        "release": models.release(mid, "usd", amount, livemode=False),
        "reserve": models.reserve_refund(mid, "usd", amount, livemode=False),
        "refund": models.refund_succeeded(mid, "usd", amount, fee, livemode=False),
        "failed": models.refund_failed(mid, "usd", amount, livemode=False),
        "payout": models.payout(mid, "usd", amount, livemode=False),
    }[kind]
    assert models.balanced(postings)
