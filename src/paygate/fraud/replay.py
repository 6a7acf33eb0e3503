"""Replaying a labelled payment history through the online features, in time order, with each
fraud label fed back `label_delay_days` after its payment (the handbook's delayed-feedback
setting, chapter 2, "Machine learning for credit card fraud detection", and chapter 5,
"Validation strategies").

Two paths give the same matrix (tested on reduced runs): `replay_online` drives
`OnlineFeatures` one payment at a time, as the live service does; `batch_features` computes the
same window counts for the whole history at once with sorted arrays, for the 1.75-million-payment
benchmark.

Both take a DataFrame in time order with columns `transaction_id`, `time` (Unix seconds),
`customer_id` (the card), `terminal_id`, `amount` (major units) and `is_fraud`.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd

from paygate.fraud.counters import MemoryCounterStore
from paygate.fraud.features import (
    AMOUNT_SCALE,
    DEFAULT_CONFIG,
    HOURS_PER_DAY,
    SECONDS_PER_HOUR,
    FeatureConfig,
    OnlineFeatures,
    Txn,
    assemble,
)

_ENTITY_SHIFT = (
    32  # entity id << 32 | hour: (entity << 32) + hour: one sortable key per (entity, hour)
)


def amount_units(amount: pd.Series | np.ndarray) -> np.ndarray:
    """Major-unit amounts (two decimals in the benchmark) as the counters' integers."""
    units: np.ndarray = np.rint(np.asarray(amount, dtype=float) * AMOUNT_SCALE).astype(np.int64)
    return units


def _codes(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.factorize(values)[0], dtype=np.int64)


def batch_features(tx: pd.DataFrame, config: FeatureConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The feature matrix `replay_online` would produce for `tx`, computed at once."""
    time = tx["time"].to_numpy(dtype=np.int64)
    if len(time) > 1 and np.any(np.diff(time) < 0):
        raise ValueError("transactions must be in time order")
    hour = time // SECONDS_PER_HOUR
    units = amount_units(tx["amount"])
    card, term = _codes(tx["customer_id"]), _codes(tx["terminal_id"])
    fraud = tx["is_fraud"].to_numpy().astype(bool)

    # Cards: the earlier payments of the same card (earlier rows) in the window's hours.
    order = np.argsort(card, kind="stable")
    key = (card[order] << _ENTITY_SHIFT) + hour[order]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    cumulative = np.concatenate([[0], np.cumsum(units[order])])
    card_n: list[np.ndarray] = []
    card_sum: list[np.ndarray] = []
    for w in config.card_windows_days:
        first, _ = config.card_window(0, w)  # offset of the window's first hour
        start = np.searchsorted(key, (card << _ENTITY_SHIFT) + (hour + first), side="left")
        card_n.append(position - start)
        card_sum.append(cumulative[position] - cumulative[start])

    # Terminals: payments, and frauds, in the window's hours (all before the delay).
    tkey = np.sort((term << _ENTITY_SHIFT) + hour)
    fkey = np.sort((term[fraud] << _ENTITY_SHIFT) + hour[fraud])
    term_n: list[np.ndarray] = []
    term_fraud: list[np.ndarray] = []
    for w in config.terminal_windows_days:
        first, last = config.terminal_window(0, w)
        lo, hi = (term << _ENTITY_SHIFT) + (hour + first), (term << _ENTITY_SHIFT) + (hour + last)
        term_n.append(np.searchsorted(tkey, hi, "right") - np.searchsorted(tkey, lo, "left"))
        term_fraud.append(np.searchsorted(fkey, hi, "right") - np.searchsorted(fkey, lo, "left"))
    return assemble(config, time, units, card_n, card_sum, term_n, term_fraud)


async def replay_online(
    tx: pd.DataFrame, config: FeatureConfig = DEFAULT_CONFIG, online: OnlineFeatures | None = None
) -> np.ndarray:
    """Drive `OnlineFeatures` through `tx` one payment at a time, each fraud reported exactly
    `label_delay_days` after its payment (before any payment at or after that moment)."""
    now = [0.0]
    if online is None:
        online = OnlineFeatures(MemoryCounterStore(clock=lambda: now[0]), config)
    delay_s = config.label_delay_days * HOURS_PER_DAY * SECONDS_PER_HOUR
    pending: deque[tuple[float, str, str, float]] = deque()
    rows = zip(
        tx["transaction_id"].tolist(),
        tx["time"].tolist(),
        tx["customer_id"].tolist(),
        tx["terminal_id"].tolist(),
        amount_units(tx["amount"]).tolist(),
        tx["is_fraud"].tolist(),
        strict=True,
    )
    out = np.empty((len(tx), len(online.feature_names)))
    for i, (txn_id, time, card, terminal, units, is_fraud) in enumerate(rows):
        while pending and pending[0][0] <= time:
            now[0], fraud_id, fraud_terminal, fraud_time = pending.popleft()
            await online.report_fraud(fraud_id, fraud_terminal, fraud_time)
        now[0] = time
        txn = Txn(str(txn_id), str(card), str(terminal), time, units, exponent=4)
        out[i] = await online.observe(txn)
        if is_fraud:
            pending.append((time + delay_s, str(txn_id), str(terminal), time))
    return out
