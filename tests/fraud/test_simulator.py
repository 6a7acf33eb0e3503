from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from paygate.fraud.simulator import (
    SimulatedData,
    SimulationConfig,
    _generate,
    _sample_ids,
    simulate,
)
from tests.fraud.conftest import REDUCED


def test_same_seed_same_data(reduced: SimulatedData) -> None:
    again = simulate(REDUCED)
    pd.testing.assert_frame_equal(again.transactions, reduced.transactions)


def test_another_seed_other_data(reduced: SimulatedData) -> None:
    other = simulate(SimulationConfig(n_customers=150, n_terminals=400, n_days=60, seed=1))
    assert not other.customers[["x", "y"]].equals(reduced.customers[["x", "y"]])
    assert len(other.transactions) != len(reduced.transactions)


def test_time_order_and_ids(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    assert (np.diff(tx["time"].to_numpy()) >= 0).all()
    assert (tx["transaction_id"].to_numpy() == np.arange(len(tx))).all()
    assert tx["day"].between(0, REDUCED.n_days - 1).all()
    assert ((tx["seconds"] // 86_400) == tx["day"]).all()


def test_customers_pay_only_within_radius(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    cust = reduced.customers.set_index("customer_id").loc[tx["customer_id"], ["x", "y"]]
    term = reduced.terminals.set_index("terminal_id").loc[tx["terminal_id"], ["x", "y"]]
    c, t = cust.to_numpy(), term.to_numpy()
    distance = np.hypot(c[:, 0] - t[:, 0], c[:, 1] - t[:, 1])
    assert (distance < REDUCED.radius).all()
    for c, terminals in enumerate(reduced.available_terminals):
        used = tx.loc[tx["customer_id"] == c, "terminal_id"].unique()
        assert set(used) <= set(terminals.tolist())


def test_scenario_1_amounts_over_220_are_frauds(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    raw = _generate(REDUCED, reduced.customers, reduced.available_terminals)
    over = raw["amount"].to_numpy() > 220
    assert over.any()
    assert (tx["is_fraud"].to_numpy()[over] == 1).all()
    assert (raw["amount"].to_numpy()[tx["fraud_scenario"].to_numpy() == 1] > 220).all()


def test_scenario_2_compromised_terminals(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    s2 = tx[tx["fraud_scenario"] == 2]
    assert len(s2) > 0
    # A compromised terminal's every payment that day is a fraud.
    days = set(zip(s2["terminal_id"], s2["day"], strict=True))
    same = tx[[(t, d) in days for t, d in zip(tx["terminal_id"], tx["day"], strict=True)]]
    assert (same["is_fraud"] == 1).all()
    # Two terminals a day, each compromised for 28 days from the day it is drawn.
    assert s2["terminal_id"].nunique() <= 2 * REDUCED.n_days
    span = s2.groupby("terminal_id")["day"].agg(lambda d: d.max() - d.min())
    assert span.size > 1
    assert (span < REDUCED.n_days + 28).all()


def test_scenario_3_compromised_cards_pay_five_times_more(reduced: SimulatedData) -> None:
    tx = reduced.transactions
    raw = _generate(REDUCED, reduced.customers, reduced.available_terminals)
    s3 = tx["fraud_scenario"].to_numpy() == 3
    assert s3.any()
    ratio = tx["amount"].to_numpy()[s3] / raw["amount"].to_numpy()[s3]
    assert np.all(np.isclose(ratio, 5) | np.isclose(ratio, 25) | np.isclose(ratio, 125))
    untouched = tx["amount"].to_numpy()[~s3]
    assert np.array_equal(untouched, raw["amount"].to_numpy()[~s3])
    # Three cards a day; each draw marks a third of the card's next 14 days of payments.
    cards = tx.loc[s3, "customer_id"].unique()
    assert len(cards) <= 3 * REDUCED.n_days
    share = (
        tx[tx["customer_id"].isin(cards)]
        .groupby("customer_id")["fraud_scenario"]
        .apply(lambda s: (s == 3).mean())
    )
    assert 0.05 < share.mean() < 0.6


def test_sampling_matches_pandas_sample() -> None:
    # The handbook draws compromised terminals and cards with `Series.sample(n, random_state)`.
    ids = pd.Series(np.arange(1_000))
    for seed in range(20):
        expected = ids.sample(n=3, random_state=seed).to_numpy()
        assert np.array_equal(_sample_ids(1_000, 3, seed), expected)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("PAYGATE_FULL_BENCHMARK") != "1",
    reason="the full benchmark takes minutes: set PAYGATE_FULL_BENCHMARK=1",
)
def test_full_seed_0_reproduces_the_published_data_set() -> None:
    tx = simulate(SimulationConfig()).transactions
    assert len(tx) == 1_754_155
    assert int(tx["is_fraud"].sum()) == 14_681
