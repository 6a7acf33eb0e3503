"""Latency of the live fraud service's scoring of one payment: the online features over the
counter store, the shipped model's score and, for notable scores, its reasons (the fraud
worker's `ModelScorer.score`), each payment alone, as the worker runs it on its event loop.

    python bench/fraud_latency.py [--payments 3000] [--redis-url redis://127.0.0.1:6379/0]

Prints p50 and p99 in milliseconds, for all payments and for those explained (score ≥ 65), and
the share above the 5 ms budget. With `--redis-url` the counters live in that Redis (the
scale-out store) instead of memory.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import numpy as np
import pandas as pd

from paygate.fraud.counters import CounterStore, MemoryCounterStore, RedisCounterStore
from paygate.fraud.features import Txn
from paygate.fraud.replay import amount_units
from paygate.fraud.scoring import ModelScorer
from paygate.fraud.simulator import SimulationConfig, simulate

BUDGET_MS = 5.0


async def main(payments: int, redis_url: str | None) -> None:
    tx = simulate(SimulationConfig(n_customers=500, n_terminals=1_000, n_days=40)).transactions
    warm, timed = tx.iloc[:-payments], tx.iloc[-payments:]  # the windows are full when timed
    store: CounterStore = (
        RedisCounterStore(redis_url, prefix=f"bench{uuid.uuid4().hex}:")
        if redis_url
        else MemoryCounterStore()
    )
    scorer = ModelScorer(store)

    def txns(f: pd.DataFrame) -> list[Txn]:
        rows = zip(
            f["transaction_id"],
            f["time"],
            f["customer_id"],
            f["terminal_id"],
            amount_units(f["amount"]),
            strict=True,
        )
        return [
            Txn(str(i), str(card), str(term), float(at), int(units), exponent=4)
            for i, at, card, term, units in rows
        ]

    for txn in txns(warm.iloc[-20_000:]):  # fill the counters (unmeasured)
        await scorer.online.observe(txn)
    all_ms: list[float] = []
    explained_ms: list[float] = []
    for txn in txns(timed):
        start = time.perf_counter()
        scored = await scorer.score(txn)
        elapsed = (time.perf_counter() - start) * 1e3
        all_ms.append(elapsed)
        if scored.score >= 65:
            explained_ms.append(elapsed)
    close = getattr(store, "close", None)
    if close is not None:
        await close()
    print(f"model {scorer.model.version}, {len(all_ms)} payments, counters: {store.backend}")
    for name, values in (("all", all_ms), ("explained", explained_ms)):
        if not values:
            print(f"{name:>9}: none")
            continue
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:>9}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  (n={len(values)})")
    over = sum(v > BUDGET_MS for v in all_ms) / len(all_ms)
    print(f"above {BUDGET_MS:.0f} ms: {over:.2%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=3_000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.payments, args.redis_url))
