"""Scoring payments: the online features over the counter store, then the model, with the
reasons of a notable score.

Reasons are feature groups (the amount, the card's velocity, the amount against the card's
habits, the merchant's fraud history, the time): a group's contribution is how far the fraud
probability falls when the group is treated as unknown, where each tree then follows the branch
the model learned for missing values (for features never missing in training, the branch most
training payments took). Explaining costs a few model walks, so only scores from
`explain_from` up are explained: an ordinary payment costs one feature read and one walk.

    >>> scorer = ModelScorer(MemoryCounterStore())  # doctest: +SKIP
    >>> await scorer.score(txn)  # doctest: +SKIP
    Scored(score=3, reasons=(), model_version='20261125001909-8dc91b00')
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from paygate.fraud.counters import CounterStore
from paygate.fraud.decide import Scored
from paygate.fraud.features import OnlineFeatures, Txn
from paygate.fraud.model import FraudModel, load_default, risk_scores
from paygate.fraud.screening import ELEVATED_FROM

__all__ = ["REASON_GROUPS", "ModelScorer", "Scorer", "default_model"]

# Reason code -> the feature-name prefixes it covers.
REASON_GROUPS: dict[str, tuple[str, ...]] = {
    "amount": ("amount",),
    "amount_unusual_for_card": ("card_avg_amount_", "amount_over_card_avg_"),
    "card_velocity": ("card_tx_",),
    "merchant_fraud_history": ("terminal_",),
    "time_of_day": ("is_night", "is_weekend"),
}
MAX_REASONS = 3
MIN_CONTRIBUTION = 0.01  # one point of score


class Scorer(Protocol):
    """Scores payments in order and counts each in the features (once per payment id);
    `explain_from` holds each payment's threshold of explanation."""

    async def score_many(
        self, txns: Sequence[Txn], *, explain_from: Sequence[int]
    ) -> list[Scored]: ...


@lru_cache(maxsize=1)
def default_model() -> FraudModel:
    """The shipped model, loaded once per process."""
    return load_default()


class ModelScorer:
    def __init__(self, store: CounterStore, model: FraudModel | None = None) -> None:
        self.model = model or default_model()
        self.online = OnlineFeatures(store, self.model.features())
        names = self.model.feature_names
        self._groups: list[tuple[str, np.ndarray]] = []
        for code, prefixes in REASON_GROUPS.items():
            # "amount" is the feature itself, not every name starting with it.
            cols = [
                i
                for i, n in enumerate(names)
                if (n == "amount" if prefixes == ("amount",) else n.startswith(prefixes))
            ]
            if cols:
                self._groups.append((code, np.asarray(cols, dtype=np.intp)))

    async def score(self, txn: Txn, *, explain_from: int = ELEVATED_FROM) -> Scored:
        [scored] = await self.score_many([txn], explain_from=[explain_from])
        return scored

    async def score_many(self, txns: Sequence[Txn], *, explain_from: Sequence[int]) -> list[Scored]:
        """The payments' features read and counted together (`OnlineFeatures.observe_many`),
        then the model per payment: its walk costs the same per row in a matrix."""
        out: list[Scored] = []
        vectors = await self.online.observe_many(txns)
        for vector, threshold in zip(vectors, explain_from, strict=True):
            proba = self.model.trees.proba_one(vector)
            score = int(risk_scores(np.array([proba]))[0])
            reasons = self.explain(vector, proba) if score >= threshold else ()
            out.append(Scored(score, reasons, self.model.version))
        return out

    def explain(self, vector: np.ndarray, proba: float) -> tuple[str, ...]:
        """The reason codes whose groups raise the probability most, largest first."""
        gains: list[tuple[float, str]] = []
        for code, cols in self._groups:
            masked = vector.copy()
            masked[cols] = np.nan
            gain = proba - self.model.trees.proba_one(masked)
            if gain >= MIN_CONTRIBUTION:
                gains.append((gain, code))
        gains.sort(reverse=True)
        return tuple(code for _, code in gains[:MAX_REASONS])
