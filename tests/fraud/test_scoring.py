"""The model scorer: features over the counter store, the shipped model, reasons."""

from __future__ import annotations

import numpy as np

from paygate.fraud.counters import MemoryCounterStore
from paygate.fraud.features import Txn
from paygate.fraud.scoring import REASON_GROUPS, ModelScorer

T0 = 1_750_000_000.0


async def test_scores_within_range_and_counts_each_payment_once() -> None:
    store = MemoryCounterStore()
    scorer = ModelScorer(store)
    first = await scorer.score(Txn("pay_1", "card", "mer", T0, 1999))
    assert 0 <= first.score <= 100 and first.model_version == scorer.model.version
    again = await scorer.score(Txn("pay_1", "card", "mer", T0, 1999))  # a redelivery
    assert again.score == first.score
    n = await scorer.online.observe(Txn("pay_2", "card", "mer", T0 + 60, 1999))
    assert n[scorer.model.feature_names.index("card_tx_1d")] == 1  # pay_1 counted once


async def test_a_large_unusual_amount_scores_high_with_reasons() -> None:
    scorer = ModelScorer(MemoryCounterStore())
    for i in range(5):  # the card's habit: small amounts
        await scorer.score(Txn(f"pay_{i}", "card", "mer", T0 + i * 3600, 2_000))
    risky = await scorer.score(Txn("pay_big", "card", "mer", T0 + 6 * 3600, 90_000))
    ordinary = await scorer.score(Txn("pay_small", "card2", "mer", T0 + 7 * 3600, 2_000))
    assert risky.score >= 65 > ordinary.score
    assert risky.reasons and set(risky.reasons) <= set(REASON_GROUPS)
    assert "amount" in risky.reasons or "amount_unusual_for_card" in risky.reasons
    assert ordinary.reasons == ()  # below the explain threshold: not explained


def test_explain_names_the_group_that_raises_the_probability() -> None:
    scorer = ModelScorer(MemoryCounterStore())
    names = scorer.model.feature_names
    # A new card (no history: averages unknown) at a quiet terminal, paying 230: above the
    # benchmark's "every amount above 220 is a fraud".
    vector = np.full(len(names), np.nan)
    for i, name in enumerate(names):
        if name.startswith(("card_tx_", "terminal_tx_")) or name in ("is_weekend", "is_night"):
            vector[i] = 0.0
    vector[names.index("amount")] = 50.0
    assert scorer.explain(vector, scorer.model.trees.proba_one(vector)) == ()
    vector[names.index("amount")] = 230.0
    proba = scorer.model.trees.proba_one(vector)
    assert proba > 0.1
    assert scorer.explain(vector, proba) == ("amount",)
