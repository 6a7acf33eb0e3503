"""Latency of fraud scoring for one payment: the online features (in-memory counters) and the
shipped model's score, each payment alone, as the fraud worker does it.

    python bench/fraud_scoring.py [--payments 3000]

Prints p50 and p99 in milliseconds for the features, the score, and both; the budget for the
score is 5 ms at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from paygate.fraud.counters import MemoryCounterStore
from paygate.fraud.features import OnlineFeatures, Txn
from paygate.fraud.model import load_default
from paygate.fraud.replay import amount_units
from paygate.fraud.simulator import SimulationConfig, simulate


async def main(payments: int) -> None:
    model = load_default()
    tx = simulate(SimulationConfig(n_customers=500, n_terminals=1_000, n_days=40)).transactions
    tx = tx.iloc[-payments:]  # late payments: the windows are full
    now = [0.0]
    online = OnlineFeatures(MemoryCounterStore(clock=lambda: now[0]), model.features())
    model.score(np.zeros(len(model.feature_names)))  # warm up
    features_ms: list[float] = []
    score_ms: list[float] = []
    rows = zip(
        tx["transaction_id"],
        tx["time"],
        tx["customer_id"],
        tx["terminal_id"],
        amount_units(tx["amount"]),
        strict=True,
    )
    for txn_id, at, card, terminal, units in rows:
        now[0] = float(at)
        txn = Txn(str(txn_id), str(card), str(terminal), float(at), int(units), exponent=4)
        start = time.perf_counter()
        vector = await online.observe(txn)
        middle = time.perf_counter()
        score = model.score(vector)
        end = time.perf_counter()
        assert 0 <= score <= 100
        features_ms.append((middle - start) * 1e3)
        score_ms.append((end - middle) * 1e3)
    both = np.add(features_ms, score_ms)
    print(f"model {model.version}, {len(score_ms)} payments")
    for name, values in (("features", features_ms), ("score", score_ms), ("both", both)):
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:>8}: p50 {p50:.3f} ms  p99 {p99:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=3_000)
    asyncio.run(main(parser.parse_args().payments))
