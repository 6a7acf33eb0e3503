from __future__ import annotations

import math

import numpy as np
import pytest

from paygate.fraud.counters import MemoryCounterStore
from paygate.fraud.evaluation import BENCHMARK_FEATURES
from paygate.fraud.features import FEATURE_NAMES, OnlineFeatures, Txn
from paygate.fraud.replay import batch_features, replay_online
from paygate.fraud.simulator import SimulatedData

MIDNIGHT = 1_700_006_400  # 2023-11-15 00:00 UTC, a Wednesday
HOUR, DAY = 3_600, 86_400


class Clock:
    def __init__(self) -> None:
        self.now = float(MIDNIGHT)

    def __call__(self) -> float:
        return self.now


def online() -> tuple[OnlineFeatures, Clock]:
    clock = Clock()
    return OnlineFeatures(MemoryCounterStore(clock=clock)), clock


def txn(i: int, at: float, card: str = "card", terminal: str = "term", amount: int = 1_000) -> Txn:
    return Txn(id=f"pay_{i}", card=card, terminal=terminal, time=at, amount_minor=amount)


def f(vector: np.ndarray, name: str) -> float:
    return float(vector[FEATURE_NAMES.index(name)])


async def test_first_payment_knows_nothing_but_itself() -> None:
    features, _ = online()
    v = await features.observe(txn(1, MIDNIGHT + 3 * HOUR, amount=4_250))
    assert f(v, "amount") == 42.5
    assert f(v, "is_night") == 1.0  # 03:00 UTC
    assert f(v, "is_weekend") == 0.0
    for w in (1, 7, 30):
        assert f(v, f"card_tx_{w}d") == 0
        assert math.isnan(f(v, f"card_avg_amount_{w}d"))
        assert f(v, f"terminal_tx_{w}d") == 0
        assert math.isnan(f(v, f"terminal_fraud_share_{w}d"))


async def test_card_windows_count_earlier_payments_only() -> None:
    features, clock = online()
    start = MIDNIGHT + 12 * HOUR
    for i, (at, amount) in enumerate([(start, 1_000), (start + 23 * HOUR, 3_000)]):
        clock.now = at
        await features.observe(txn(i, at, amount=amount))
    clock.now = start + 23 * HOUR + 1
    v = await features.observe(txn(9, clock.now, amount=8_000))
    assert f(v, "card_tx_1d") == 2  # the first payment's hour is the window's oldest
    assert f(v, "card_avg_amount_1d") == 20.0
    assert f(v, "amount_over_card_avg_1d") == 4.0
    clock.now = start + 24 * HOUR
    v = await features.observe(txn(10, clock.now))
    assert f(v, "card_tx_1d") == 2  # the first left the window; the third came in
    assert f(v, "card_tx_7d") == 3


async def test_a_redelivered_payment_counts_once_and_never_sees_itself() -> None:
    features, clock = online()
    first = txn(1, MIDNIGHT + 10 * HOUR, amount=5_000)
    clock.now = first.time
    v1 = await features.observe(first)
    v2 = await features.observe(first)
    np.testing.assert_array_equal(v1, v2)
    clock.now = first.time + 600
    v3 = await features.observe(txn(2, clock.now, amount=2_000))
    assert f(v3, "card_tx_1d") == 1
    assert f(v3, "card_avg_amount_1d") == 50.0
    v4 = await features.observe(first)  # redelivered after a later payment of the same hour
    assert f(v4, "card_tx_1d") == 1  # that payment, not itself
    assert f(v4, "card_avg_amount_1d") == 20.0
    clock.now = first.time + 2 * HOUR
    await features.observe(txn(3, clock.now))
    v5 = await features.observe(first)  # windows end at the payment's own hour
    np.testing.assert_array_equal(v5, v4)


async def test_labels_count_only_once_due_and_only_once() -> None:
    features, clock = online()
    fraud = txn(1, MIDNIGHT + 10 * HOUR, card="a")
    clock.now = fraud.time
    await features.observe(fraud)
    # Reported at once, twice: the second report is a duplicate.
    assert await features.report_fraud(fraud.id, fraud.terminal, fraud.time)
    assert not await features.report_fraud(fraud.id, fraud.terminal, fraud.time)
    for i, after in enumerate([HOUR, DAY, 7 * DAY]):
        clock.now = fraud.time + after
        v = await features.observe(txn(10 + i, clock.now, card=f"b{i}"))
        assert math.isnan(f(v, "terminal_fraud_share_1d")), after
        assert f(v, "terminal_tx_30d") == 0
    clock.now = fraud.time + 7 * DAY + HOUR  # the payment's hour is now older than the delay
    v = await features.observe(txn(20, clock.now, card="c"))
    assert f(v, "terminal_tx_1d") == 1
    assert f(v, "terminal_fraud_share_1d") == 1.0
    assert f(v, "terminal_fraud_share_30d") == 1.0


def test_amounts_of_any_exponent_count_exactly() -> None:
    assert Txn("p", "c", "t", 0.0, 1_999).amount_units == 199_900
    assert Txn("p", "c", "t", 0.0, 500, exponent=0).amount == 500.0
    assert Txn("p", "c", "t", 0.0, 1_234, exponent=3).amount_units == 12_340
    with pytest.raises(ValueError):
        Txn("p", "c", "t", 0.0, 1, exponent=5)


async def test_batch_equals_one_at_a_time(reduced: SimulatedData) -> None:
    tx = reduced.transactions.iloc[:2_500]
    for config in (BENCHMARK_FEATURES, OnlineFeatures(MemoryCounterStore()).config):
        batch = batch_features(tx, config)
        one_by_one = await replay_online(tx, config)
        np.testing.assert_array_equal(batch, one_by_one)


def test_features_never_look_ahead(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    full = batch_features(tx, BENCHMARK_FEATURES)
    # Later payments change nothing before them.
    prefix = batch_features(tx.iloc[:4_000], BENCHMARK_FEATURES)
    np.testing.assert_array_equal(prefix, full[:4_000])
    # Labels not yet due (payments within the delay) change nothing; older labels do.
    i = len(tx) - 1
    due = tx["time"].to_numpy() < tx["time"].iloc[i] - 7 * DAY
    relabelled = tx.copy()
    relabelled.loc[~due, "is_fraud"] = 1 - relabelled.loc[~due, "is_fraud"]
    np.testing.assert_array_equal(batch_features(relabelled, BENCHMARK_FEATURES)[i], full[i])
    relabelled = tx.copy()
    relabelled.loc[due, "is_fraud"] = 1
    assert not np.array_equal(batch_features(relabelled, BENCHMARK_FEATURES), full)


async def test_the_counted_mark_lives_as_long_as_redeliveries_not_as_the_windows() -> None:
    """The mark that keeps a redelivered payment from being counted twice only has to outlive
    redeliveries (minutes on the bus, days for a replayed dead letter); the counters live as
    long as the longest window. Keeping every payment's mark as long as the counters made it
    the largest thing in Redis."""
    store = MemoryCounterStore(clock=Clock())
    features = OnlineFeatures(store)
    cfg = features.config
    assert cfg.redelivery_days * DAY < cfg.ttl_s
    first = txn(1, MIDNIGHT + HOUR)
    await features.observe(first)
    mark = f"{cfg.namespace}:seen:{first.id}"
    counter = next(k for k in store._data if k.startswith(f"{cfg.namespace}:card:"))
    assert store._data[mark][1] == MIDNIGHT + cfg.redelivery_days * DAY
    assert store._data[counter][1] == MIDNIGHT + cfg.ttl_s
    # Redelivered within that time: counted once.
    again = await features.observe(first)
    assert f(again, "card_tx_1d") == 0
