"""Training on the gateway's own labelled payments.

A labelled history is a table with one row per payment: `id`, `created` (Unix seconds or ISO
8601), `card` (the card fingerprint), `merchant` (or terminal), `amount` (minor units),
`currency` (optional, ISO 4217, default two decimals) and `is_fraud` (0 or 1). It is replayed
through the same online features as live payments; the model trains on all but the last two
weeks (a week for the label delay, then a test week whose figures go in the sidecar), as the
benchmark splits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from paygate.fraud.defaults import DEFAULT_ENSEMBLE
from paygate.fraud.evaluation import BENCHMARK_FEATURES, Split, split_masks
from paygate.fraud.features import FeatureConfig
from paygate.fraud.metrics import assess
from paygate.fraud.model import FraudModel, fit
from paygate.fraud.replay import batch_features
from paygate.money import exponent

REQUIRED = ("id", "created", "card", "merchant", "amount", "is_fraud")
SECONDS_PER_DAY = 86_400


def read_history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "card": str, "merchant": str})


def _unix(created: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(created):
        return np.asarray(created.to_numpy(dtype=np.int64))
    stamps = pd.to_datetime(created, utc=True)
    return np.asarray((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))


def replay_frame(history: pd.DataFrame) -> pd.DataFrame:
    """The history in the replay's columns and time order."""
    missing = [c for c in REQUIRED if c not in history.columns]
    if missing:
        raise ValueError(f"labelled history lacks columns: {', '.join(missing)}")
    currency = history["currency"] if "currency" in history else pd.Series("usd", history.index)
    exps = np.array([exponent(str(c).lower()) or 0 for c in currency], dtype=np.int64)
    seconds = _unix(history["created"])
    frame = pd.DataFrame(
        {
            "transaction_id": history["id"].astype(str).to_numpy(),
            "time": seconds,
            "customer_id": history["card"].astype(str).to_numpy(),
            "terminal_id": history["merchant"].astype(str).to_numpy(),
            "amount": history["amount"].to_numpy(dtype=float) / 10.0**exps,
            "is_fraud": history["is_fraud"].to_numpy(dtype=np.int64),
        }
    )
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    frame["day"] = (frame["time"] - frame["time"].min()) // SECONDS_PER_DAY
    return frame


def train_on_history(
    history: pd.DataFrame,
    *,
    features: FeatureConfig = BENCHMARK_FEATURES,
    ensemble: int = DEFAULT_ENSEMBLE,
    params: dict[str, Any] | None = None,
) -> FraudModel:
    """Train on everything up to two weeks before the last day (after a warm-up long enough to
    fill the longest window), and measure on the last week."""
    tx = replay_frame(history)
    X = batch_features(tx, features)
    y = tx["is_fraud"].to_numpy()
    last = int(tx["day"].max())
    warmup = max(*features.card_windows_days, *features.terminal_windows_days)
    warmup += features.label_delay_days
    split = Split(train_start_day=0, train_days=max(1, last - 13))
    train, test = split_masks(tx, split)
    warm = train & (tx["day"].to_numpy() >= warmup)
    if len(np.unique(y[warm])) == 2:
        train = warm
    if len(np.unique(y[train])) < 2:
        raise ValueError("the labelled history needs frauds and genuine payments to learn from")
    model = fit(
        X[train],
        y[train],
        features,
        params=params,
        ensemble=ensemble,
        trained_on={
            "history_rows": len(tx),
            "train_rows": int(train.sum()),
            "train_frauds": int(y[train].sum()),
            "first": datetime.fromtimestamp(int(tx["time"].min()), UTC).isoformat(),
            "test_days": split.test_days,
        },
    )
    if len(np.unique(y[test])) == 2:
        day, card = tx["day"].to_numpy()[test], tx["customer_id"].to_numpy()[test]
        metrics = assess(day, card, y[test], model.predict_proba(X[test]))
        model.metrics = {k: round(v, 4) for k, v in metrics.items()}
    return model
