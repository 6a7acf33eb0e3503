"""Live velocity attributes: earlier payments only, counted once, windows exact to the minute,
amounts per currency, per merchant and mode."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from paygate.fraud import velocity
from paygate.fraud.attributes import PaymentFacts
from paygate.fraud.counters import MemoryCounterStore

T0 = 1_750_000_020  # a whole minute


def facts(at: int, amount: int = 100, currency: str = "usd", **kw: str) -> PaymentFacts:
    return PaymentFacts(amount=amount, currency=currency, created=at, card_fingerprint="fp1", **kw)


async def test_counts_earlier_payments_once_within_the_window() -> None:
    store = MemoryCounterStore()
    seen = await velocity.observe(store, "pay_0", "mer", False, facts(T0 - 3600 - 60))
    assert seen == {
        "total_payments_per_card_hourly": 0,
        "total_payments_per_card_daily": 0,
        "total_amount_per_card_hourly": 0,
        "total_amount_per_card_daily": 0,
    }
    await velocity.observe(store, "pay_1", "mer", False, facts(T0 - 600, 250))
    await velocity.observe(store, "pay_1", "mer", False, facts(T0 - 600, 250))  # redelivered
    await velocity.observe(store, "pay_eur", "mer", False, facts(T0 - 300, 999, "eur"))
    now = await velocity.observe(store, "pay_2", "mer", False, facts(T0, 100))
    assert now["total_payments_per_card_hourly"] == 2  # pay_0 is 61 minutes old
    assert now["total_payments_per_card_daily"] == 3
    assert now["total_amount_per_card_hourly"] == 250  # the euro payment is not added
    assert now["total_amount_per_card_daily"] == 350
    again = await velocity.observe(store, "pay_2", "mer", False, facts(T0, 100))
    assert again == now  # a redelivery leaves itself out


async def test_per_merchant_mode_and_entity() -> None:
    store = MemoryCounterStore()
    await velocity.observe(store, "a", "mer", False, facts(T0, email="Ann@Example.com"))
    live = await velocity.observe(store, "b", "mer", True, facts(T0 + 60, email="ann@example.com"))
    assert live["total_payments_per_card_hourly"] == 0
    test = await velocity.observe(store, "c", "mer", False, facts(T0 + 60, email="ann@example.com"))
    assert test["payments_per_email_daily"] == 1 and test["total_payments_per_card_daily"] == 1
    assert "payments_per_ip_daily" not in test  # no IP known: no IP velocity
    other = await velocity.observe(store, "d", "mer2", False, facts(T0 + 60))
    assert other["total_payments_per_card_daily"] == 0


@settings(max_examples=40, deadline=None)
@given(
    payments=st.lists(
        st.tuples(
            st.sampled_from(["fp1", "fp2"]),
            st.sampled_from([None, "ann@example.com"]),
            st.sampled_from([0, 30, 600, 3_000, 80_000]),  # seconds before T0
            st.sampled_from(["usd", "eur"]),
            st.integers(1, 10_000),
        ),
        min_size=1,
        max_size=5,
    ),
    arrivals=st.lists(st.integers(0, 4), min_size=1, max_size=12),
    batch=st.integers(1, 6),
)
def test_a_batch_observed_at_once_is_observed_one_by_one(
    payments: list[tuple[str, str | None, int, str, int]], arrivals: list[int], batch: int
) -> None:
    """`observe_many` of each batch (redeliveries among them) gives what `observe` of one
    arrival after the other gives, and leaves the same counts."""

    def observed(n: int) -> velocity.Observed:
        card, email, before, currency, amount = payments[n % len(payments)]
        at = T0 - before - n * 60
        made = PaymentFacts(amount, currency, at, card_fingerprint=card, email=email)
        return (f"pay_{n}", "mer", False, made)

    async def run() -> None:
        one, many = MemoryCounterStore(), MemoryCounterStore()
        alone = [await velocity.observe(one, *observed(n)) for n in arrivals]
        together = []
        for start in range(0, len(arrivals), batch):
            chunk = [observed(n) for n in arrivals[start : start + batch]]
            together += await velocity.observe_many(many, chunk)
        assert alone == together
        keys = sorted({k for n in arrivals for k, _ in velocity._counts(*observed(n)[1:])})
        assert await one.get_many(keys) == await many.get_many(keys)

    asyncio.run(run())
