from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paygate.fraud.evaluation import BENCHMARK_FEATURES, benchmark_split, split_masks
from paygate.fraud.metrics import card_precision_at_k
from paygate.fraud.model import (
    FraudModel,
    TreeEnsemble,
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


SHIPPED = load_default()
# A feature's value: missing, infinite, or anywhere from the tiny to the huge, either sign.
FEATURE = st.one_of(
    st.just(float("nan")),
    st.floats(allow_nan=False),
    st.floats(min_value=-1e4, max_value=1e6, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FEATURE, min_size=SHIPPED.trees.n_features, max_size=SHIPPED.trees.n_features))
def test_one_row_s_walk_that_sets_finished_trees_aside_agrees_with_the_whole_walk(
    row: list[float],
) -> None:
    x = np.asarray(row)
    trees = SHIPPED.trees
    assert trees.proba_one(x) == pytest.approx(trees.predict_proba(x[None, :])[0], abs=1e-12)


def test_a_tree_s_deepest_leaf_is_reached_after_the_others_are_set_aside() -> None:
    # One model of two trees: a chain of six splits on the one feature (node 2i splits at i,
    # going left to the leaf 2i + 1 and right to 2i + 2; the deepest leaf is 12), and a tree
    # that is a leaf alone. The walk sets finished trees aside after its third and fifth steps,
    # and the chain's deepest leaf is reached at the sixth.
    inner = np.arange(0, 12, 2)
    feature = np.full(14, -1, dtype=np.int32)
    feature[inner] = 0
    threshold = np.full(14, np.nan)
    threshold[inner] = inner / 2
    left, right = np.zeros(14, dtype=np.int32), np.zeros(14, dtype=np.int32)
    left[inner], right[inner] = inner + 1, inner + 2
    trees = TreeEnsemble(
        n_features=1,
        feature=feature,
        threshold=threshold,
        missing_left=np.ones(14, dtype=bool),
        left=left,
        right=right,
        value=np.where(feature < 0, np.arange(14) / 10, 0.0),
        roots=np.array([0, 13], dtype=np.int32),
        model_starts=np.array([0]),
        baselines=np.array([-1.0]),
    )
    rows = np.array([[v] for v in [-1.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, np.nan]])
    walked = [trees.proba_one(row) for row in rows]
    assert walked == list(trees.predict_proba(rows))
    assert len(set(walked)) == len(rows) - 1  # NaN goes left at the root, as -1 does


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
