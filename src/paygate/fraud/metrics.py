"""The benchmark's three figures (handbook, chapter 4, "Performance metrics"): AUC ROC, average
precision, and card precision top-k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_at_k(
    day: np.ndarray, card: np.ndarray, label: np.ndarray, score: np.ndarray, k: int = 100
) -> float:
    """Chapter 4, "Precision top-k metrics": each day, a card's score is its highest payment score
    and it is compromised if any of its payments that day is a fraud; the k best-scored cards are
    checked, and the day's precision is the compromised share of those k (k, not the cards
    available, is the denominator). A compromised card found is blocked: it leaves the following
    days. The figure is the mean over the days."""
    frame = pd.DataFrame({"day": day, "card": card, "label": label, "score": score})
    found: set[object] = set()
    precisions: list[float] = []
    for _, today in frame.groupby("day", sort=True):
        today = today[~today["card"].isin(found)]
        cards = today.groupby("card", sort=True)[["score", "label"]].max()
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.index[top["label"] == 1]
        precisions.append(len(hits) / k)
        found.update(hits.tolist())
    return float(np.mean(precisions)) if precisions else 0.0


def assess(
    day: np.ndarray, card: np.ndarray, label: np.ndarray, score: np.ndarray, k: int = 100
) -> dict[str, float]:
    both_classes = len(np.unique(label)) == 2
    return {
        "auc_roc": float(roc_auc_score(label, score)) if both_classes else float("nan"),
        "average_precision": (
            float(average_precision_score(label, score)) if both_classes else float("nan")
        ),
        "card_precision_at_100" if k == 100 else f"card_precision_at_{k}": card_precision_at_k(
            day, card, label, score, k
        ),
    }
