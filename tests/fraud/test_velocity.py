"""Live velocity attributes: earlier payments only, counted once, windows exact to the minute,
amounts per currency, per merchant and mode."""

from __future__ import annotations

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
