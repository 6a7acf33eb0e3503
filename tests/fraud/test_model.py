from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paygate.fraud.evaluation import BENCHMARK_FEATURES, benchmark_split, split_masks
from paygate.fraud.metrics import card_precision_at_k
from paygate.fraud.model import (
    FraudModel,
    apply_bins,
    fit,
    fit_bins,
    load,
    load_default,
    risk_scores,
    save,
)
from paygate.fraud.replay import batch_features
from paygate.fraud.simulator import SimulatedData
from tests.fraud.conftest import REDUCED


@pytest.fixture(scope="module")
def trained(reduced: SimulatedData) -> tuple[FraudModel, np.ndarray]:
    tx = reduced.transactions
    X = batch_features(tx, BENCHMARK_FEATURES)
    train, test = split_masks(tx, benchmark_split(REDUCED))
    y = tx["is_fraud"].to_numpy()
    model = fit(X[train], y[train], BENCHMARK_FEATURES, ensemble=2, params={"max_iter": 40})
    return model, X[test]


def test_compiled_trees_agree_with_the_learner(trained: tuple[FraudModel, np.ndarray]) -> None:
    model, X = trained
    assert model.fitted is not None
    compiled = model.trees.predict_proba(X)
    np.testing.assert_allclose(compiled, model.predict_proba(X), rtol=0, atol=1e-12)


def test_scores_are_0_to_100(trained: tuple[FraudModel, np.ndarray]) -> None:
    model, X = trained
    scores = [model.score(row) for row in X[:300]]
    one_by_one = [model.trees.proba_one(row) for row in X[:300]]
    np.testing.assert_allclose(one_by_one, model.trees.predict_proba(X[:300]), atol=1e-12)
    assert all(isinstance(s, int) and 0 <= s <= 100 for s in scores)
    assert max(scores) > min(scores)
    assert list(risk_scores(np.array([0.0, 0.004, 0.5, 1.0]))) == [0, 0, 50, 100]


def test_artifact_round_trip(trained: tuple[FraudModel, np.ndarray], tmp_path: Path) -> None:
    model, X = trained
    model.metrics = {"auc_roc": 0.9}
    path = save(model, tmp_path)
    assert path.name == f"fraud-model-{model.version}.joblib"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["feature_names"] == BENCHMARK_FEATURES.feature_names()
    assert sidecar["metrics"] == {"auc_roc": 0.9}
    loaded = load_default(tmp_path)
    assert loaded.fitted is None and loaded.version == model.version
    assert loaded.features() == BENCHMARK_FEATURES
    np.testing.assert_array_equal(loaded.predict_proba(X), model.trees.predict_proba(X))
    assert load(path).score(X[0]) == model.score(X[0])


def test_shipped_model_loads_and_scores() -> None:
    model = load_default()
    assert model.feature_names == model.features().feature_names()
    row = np.full(len(model.feature_names), np.nan)
    row[0] = 10_000.0  # a huge amount, nothing else known
    assert 0 <= model.score(row) <= 100


def test_tail_bins_resolve_rare_large_values() -> None:
    rng = np.random.default_rng(0)
    amounts = np.concatenate([rng.uniform(0, 150, 100_000), rng.uniform(150, 400, 300)])
    edges = fit_bins(amounts[:, None])
    near = edges[0][(edges[0] > 200) & (edges[0] < 240)]
    assert len(near) >= 3  # 255 equal-count bins would put none there (0.2 % of the data)
    binned = apply_bins(np.array([[np.nan], [201.0], [239.0]]), edges)
    assert np.isnan(binned[0, 0]) and binned[1, 0] < binned[2, 0]


def test_card_precision_counts_cards_per_day_and_drops_found_ones() -> None:
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    card = np.array([1, 1, 2, 3, 1, 2, 3])
    label = np.array([0, 1, 0, 0, 1, 0, 1])
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.99, 0.5, 0.4])
    # Day 0: card 1 (max 0.9, compromised) and card 2 in the top 2 → 1/2. Day 1: card 1 was
    # found and blocked; cards 2 and 3 remain, card 3 is compromised → 1/2.
    assert card_precision_at_k(day, card, label, score, k=2) == 0.5
