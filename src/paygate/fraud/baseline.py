"""The handbook's reference: its chapter 3 "Baseline feature transformation" and the random forest
of chapter 3, "Baseline fraud detection system" (scikit-learn defaults, `random_state=0`, inputs
standardized). The evaluation prints it beside our model, trained and tested on the same split.

These features are computed for a whole history at once and are not online: a card's windows
include the payment itself, and ties in time are broken by row order. Terminal risk windows end
`delay` days before the payment, like the online features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler

SECONDS_PER_DAY = 86_400
WINDOWS_DAYS = (1, 7, 30)
DELAY_DAYS = 7

BASELINE_FEATURES = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *(
        f"CUSTOMER_ID_{kind}_{w}DAY_WINDOW"
        for w in WINDOWS_DAYS
        for kind in ("NB_TX", "AVG_AMOUNT")
    ),
    *(f"TERMINAL_ID_{kind}_{w}DAY_WINDOW" for w in WINDOWS_DAYS for kind in ("NB_TX", "RISK")),
]


def _sorted_by(entity: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((np.arange(len(entity)), seconds, entity))
    return order, (entity[order] << 32) + seconds[order]


def baseline_features(tx: pd.DataFrame) -> pd.DataFrame:
    """The 15 input features of the handbook's baseline, for `tx` (columns `time`, `customer_id`,
    `terminal_id`, `amount`, `is_fraud`)."""
    seconds = tx["time"].to_numpy(dtype=np.int64)
    seconds = seconds - seconds.min() if len(seconds) else seconds
    amount = tx["amount"].to_numpy(dtype=float)
    when = pd.DatetimeIndex(tx["datetime"]) if "datetime" in tx else None
    if when is None:
        when = pd.DatetimeIndex(pd.to_datetime(tx["time"].to_numpy(dtype=np.int64), unit="s"))
    out = pd.DataFrame(index=tx.index)
    out["TX_AMOUNT"] = amount
    out["TX_DURING_WEEKEND"] = (when.day_of_week >= 5).astype(int)
    out["TX_DURING_NIGHT"] = (when.hour <= 6).astype(int)

    # Card windows (t - w days, t], the payment included (a rolling window over its own row).
    card = pd.factorize(tx["customer_id"])[0].astype(np.int64)
    order, key = _sorted_by(card, seconds)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    cumulative = np.concatenate([[0.0], np.cumsum(amount[order])])
    for w in WINDOWS_DAYS:
        start = np.searchsorted(key, (card << 32) + seconds - w * SECONDS_PER_DAY, "right")
        count = position - start + 1
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = count
        total = cumulative[position + 1] - cumulative[start]
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = total / count

    # Terminal windows (t - delay - w days, t - delay]: payments and their frauds.
    term = pd.factorize(tx["terminal_id"])[0].astype(np.int64)
    order, key = _sorted_by(term, seconds)
    frauds = np.concatenate([[0], np.cumsum(tx["is_fraud"].to_numpy(dtype=np.int64)[order])])
    end = np.searchsorted(key, (term << 32) + seconds - DELAY_DAYS * SECONDS_PER_DAY, "right")
    for w in WINDOWS_DAYS:
        begin = np.searchsorted(
            key, (term << 32) + seconds - (DELAY_DAYS + w) * SECONDS_PER_DAY, "right"
        )
        count = end - begin
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = count
        with np.errstate(divide="ignore", invalid="ignore"):
            risk = (frauds[end] - frauds[begin]) / count
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.where(count > 0, risk, 0.0)
    return out[BASELINE_FEATURES]


def reference_predictions(
    train: pd.DataFrame, y_train: np.ndarray, test: pd.DataFrame, n_jobs: int = -1
) -> np.ndarray:
    """Fraud probabilities on `test` from the handbook's random forest trained on `train`."""
    scaler = StandardScaler().fit(train)
    forest = RandomForestClassifier(random_state=0, n_jobs=n_jobs)
    forest.fit(scaler.transform(train), y_train)
    return np.asarray(forest.predict_proba(scaler.transform(test))[:, 1])
