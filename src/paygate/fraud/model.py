"""The fraud model: gradient-boosted trees (scikit-learn's `HistGradientBoostingClassifier`) over
the online features, saved as a versioned artifact, scoring one payment in well under a
millisecond.

Two choices decide how it learns from one week of labels (the handbook's training window,
chapter 3, "Baseline fraud detection system"):

- **Our own binning.** The boosting library bins each feature into 255 equal-count bins; frauds
  live in the tails (large amounts, large amounts for the card, terminals with fraud), where
  those bins are wide: the last amount threshold lands near 200, so "above 220" (chapter 3,
  scenario 1) cannot be split. We bin first, 127 bins over the lowest 90 % and 127 ever finer
  towards the top 0.01 %, and give the learner the bin numbers.
- **A small ensemble.** Five models, each choosing among a random half of the features at
  every split, averaged: less variance on few frauds.

Scoring does not call scikit-learn: the trees are compiled into flat arrays whose thresholds are
back in feature units (a bin number ≤ k is a value ≤ the k-th bin edge). The artifact is those
arrays (joblib), with a JSON sidecar holding the version, the feature list and configuration, the
parameters and the metrics; it loads with any scikit-learn.

    >>> model = load_default()  # doctest: +SKIP
    >>> model.score(vector)  # vector from OnlineFeatures.observe  # doctest: +SKIP
    3
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from paygate.fraud.defaults import ARTIFACTS_DIR, DEFAULT_ENSEMBLE
from paygate.fraud.features import FeatureConfig

ARTIFACT_PREFIX = "fraud-model-"
FORMAT = 1  # of the artifact's arrays; bump when they change meaning

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "max_features": 0.5,
}


def bin_levels(body: int = 127, tail: int = 127, tail_share: float = 0.1) -> np.ndarray:
    """Quantile levels of the bin edges: even over the body, geometric towards the top."""
    even = np.linspace(0.0, 1.0 - tail_share, body, endpoint=False)
    return np.unique(np.concatenate([even, 1.0 - np.geomspace(tail_share, 1e-4, tail)]))


def fit_bins(X: np.ndarray, levels: np.ndarray | None = None) -> list[np.ndarray]:
    """Per feature, the sorted bin edges (at most 254, so that the learner keeps every bin)."""
    levels = bin_levels() if levels is None else levels
    edges: list[np.ndarray] = []
    for j in range(X.shape[1]):
        col = X[:, j][~np.isnan(X[:, j])]
        edges.append(np.unique(np.quantile(col, levels))[:254] if len(col) else np.empty(0))
    return edges


def apply_bins(X: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin numbers: how many edges lie below the value; NaN stays NaN (the learner's missing)."""
    out = np.full(X.shape, np.nan)
    for j, e in enumerate(edges):
        col = X[:, j]
        known = ~np.isnan(col)
        out[known, j] = np.searchsorted(e, col[known], side="left")
    return out


@dataclass
class TreeEnsemble:
    """Trees as flat arrays (all trees of all models); a node goes left when its feature's value
    is <= its threshold, or is missing and `missing_left`. Leaves have feature -1."""

    n_features: int
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray  # first node of each tree
    model_starts: np.ndarray  # index in `roots` of each model's first tree
    baselines: np.ndarray  # each model's starting log-odds

    def __post_init__(self) -> None:
        # The walk, fast: a missing value reads as -inf where it goes left and +inf where it goes
        # right (from a row doubled as [NaN -> -inf | NaN -> +inf]); a node then goes right when
        # value > threshold; a leaf is its own child, so every tree walks the same depth.
        leaf = self._leaf = self.feature < 0
        self._column = np.where(
            leaf, 0, self.feature + self.n_features * (~self.missing_left.astype(bool))
        ).astype(np.intp)
        self._threshold = np.where(leaf, np.inf, np.minimum(self.threshold, np.finfo(float).max))
        own = np.arange(len(self.feature))
        self._child = np.column_stack(
            [np.where(leaf, own, self.left), np.where(leaf, own, self.right)]
        ).ravel()
        # The deepest leaf: breadth first from every root at once.
        self._depth = 0
        inner = self.roots[~leaf[self.roots]].astype(np.intp)
        while len(inner):
            self._depth += 1
            below = np.concatenate([self.left[inner], self.right[inner]]).astype(np.intp)
            inner = below[~leaf[below]]

    def stored(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in (
                "n_features",
                "feature",
                "threshold",
                "missing_left",
                "left",
                "right",
                "value",
                "roots",
                "model_starts",
                "baselines",
            )
        }

    @classmethod
    def compile(
        cls, models: list[HistGradientBoostingClassifier], edges: list[np.ndarray]
    ) -> TreeEnsemble:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "t", "m", "l", "r", "v")}
        roots: list[int] = []
        starts: list[int] = []
        offset = 0
        for model in models:
            starts.append(len(roots))
            # `_predictors` holds the fitted trees (one per iteration for two classes).
            for (tree,) in model._predictors:
                nodes = tree.nodes
                leaf = nodes["is_leaf"].astype(bool)
                feat = np.where(leaf, -1, nodes["feature_idx"]).astype(np.int32)
                # A bin number b <= threshold t (a midpoint) is b <= floor(t): the value is at
                # most edge floor(t); past the last edge (or t = inf, the learner's "missing vs
                # the rest" split) every known value qualifies.
                thr = np.full(len(nodes), np.inf)
                for i in np.flatnonzero(~leaf & np.isfinite(nodes["num_threshold"])):
                    e = edges[feat[i]]
                    k = int(np.floor(nodes["num_threshold"][i]))
                    thr[i] = e[k] if k < len(e) else np.inf
                roots.append(offset)
                parts["f"].append(feat)
                parts["t"].append(thr)
                parts["m"].append(nodes["missing_go_to_left"].astype(bool))
                parts["l"].append(nodes["left"].astype(np.int32) + offset)
                parts["r"].append(nodes["right"].astype(np.int32) + offset)
                parts["v"].append(np.where(leaf, nodes["value"], 0.0))
                offset += len(nodes)
        return cls(
            n_features=len(edges),
            feature=np.concatenate(parts["f"]),
            threshold=np.concatenate(parts["t"]),
            missing_left=np.concatenate(parts["m"]),
            left=np.concatenate(parts["l"]),
            right=np.concatenate(parts["r"]),
            value=np.concatenate(parts["v"]),
            roots=np.asarray(roots, dtype=np.int32),
            model_starts=np.asarray(starts, dtype=np.int64),
            baselines=np.asarray([float(np.ravel(m._baseline_prediction)[0]) for m in models]),
        )

    def predict_proba(self, X: np.ndarray, chunk: int = 2_000) -> np.ndarray:
        """Fraud probability per row: the mean over the models of each model's probability."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        out = np.empty(len(X))
        for start in range(0, len(X), chunk):
            out[start : start + chunk] = self._proba(X[start : start + chunk])
        return out

    def _proba(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        doubled = np.hstack([np.where(missing, -np.inf, X), np.where(missing, np.inf, X)])
        rows = np.arange(len(X))[:, None]
        node = np.broadcast_to(self.roots.astype(np.intp), (len(X), len(self.roots)))
        for _ in range(self._depth):
            right = doubled[rows, self._column[node]] > self._threshold[node]
            node = self._child[2 * node + right]
        raw = np.add.reduceat(self.value[node], self.model_starts, axis=1) + self.baselines
        return np.asarray(np.mean(1.0 / (1.0 + np.exp(-raw)), axis=1))

    def proba_one(self, x: np.ndarray) -> float:
        """`predict_proba` of one row, with the least work: the fraud worker's path.

        Most trees reach a leaf in a few steps (of 1,500 shipped trees, about 400 still walk
        after five steps and none after ten), and a step's cost is in proportion to the trees
        it moves: every second step from the third, the trees at a leaf are set aside, and the
        walk stops when none is left. About 123 µs a row where moving every tree every step
        took 185 (docs/performance.md)."""
        missing = np.isnan(x)
        doubled = np.concatenate([np.where(missing, -np.inf, x), np.where(missing, np.inf, x)])
        column, threshold, child, leaf = self._column, self._threshold, self._child, self._leaf
        node = at = self.roots.astype(np.intp)
        walking: np.ndarray | None = None  # where in `node` the trees in `at` are; None: all
        for step in range(self._depth):
            at = child[2 * at + (doubled[column[at]] > threshold[at])]
            if step >= 2 and step % 2 == 0:
                inner = ~leaf[at]
                if walking is None:
                    node, walking = at, np.flatnonzero(inner)
                else:
                    node[walking] = at
                    walking = walking[inner]
                at = at[inner]
                if not len(at):
                    break
        if walking is None:
            node = at
        else:
            node[walking] = at
        raw = np.add.reduceat(self.value[node], self.model_starts) + self.baselines
        return float(np.mean(1.0 / (1.0 + np.exp(-raw))))


@dataclass
class FraudModel:
    version: str
    feature_names: list[str]
    feature_config: dict[str, Any]
    trees: TreeEnsemble
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    # Right after training: the fitted learners and bin edges, for fast batch predictions (the
    # compiled trees give the same probabilities, one payment at a time). Not saved.
    fitted: tuple[list[HistGradientBoostingClassifier], list[np.ndarray]] | None = None

    def features(self) -> FeatureConfig:
        """The feature configuration the model was trained with: the live service must count
        with the same windows and delay."""
        cfg = dict(self.feature_config)
        for key in ("card_windows_days", "terminal_windows_days"):
            cfg[key] = tuple(cfg[key])
        return FeatureConfig(**cfg)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.fitted is None:
            return self.trees.predict_proba(X)
        models, edges = self.fitted
        binned = apply_bins(np.atleast_2d(np.asarray(X, dtype=float)), edges)
        return np.asarray(np.mean([m.predict_proba(binned)[:, 1] for m in models], axis=0))

    def score(self, vector: np.ndarray) -> int:
        """Risk score 0-100 of one payment: its fraud probability in percent, rounded."""
        proba = self.trees.proba_one(np.asarray(vector, dtype=float).ravel())
        return int(risk_scores(np.array([proba]))[0])

    def sidecar(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "format": FORMAT,
            "created": self.created,
            "learner": "sklearn.ensemble.HistGradientBoostingClassifier",
            "feature_names": self.feature_names,
            "feature_config": self.feature_config,
            "params": self.params,
            "metrics": self.metrics,
            "trained_on": self.trained_on,
        }


def risk_scores(proba: np.ndarray) -> np.ndarray:
    scores: np.ndarray = np.clip(np.rint(np.asarray(proba) * 100), 0, 100).astype(np.int64)
    return scores


def fit(
    X: np.ndarray,
    y: np.ndarray,
    feature_config: FeatureConfig,
    *,
    params: dict[str, Any] | None = None,
    ensemble: int = DEFAULT_ENSEMBLE,
    trained_on: dict[str, Any] | None = None,
) -> FraudModel:
    """Train on a feature matrix (columns `feature_config.feature_names()`) and labels."""
    names = feature_config.feature_names()
    if X.shape[1] != len(names):
        raise ValueError(f"expected {len(names)} feature columns, got {X.shape[1]}")
    params = {**DEFAULT_PARAMS, **(params or {})}
    edges = fit_bins(X)
    binned = apply_bins(X, edges)
    models = [
        HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **params).fit(
            binned, y
        )
        for seed in range(ensemble)
    ]
    trees = TreeEnsemble.compile(models, edges)
    digest = hashlib.sha256()
    for arr in (trees.threshold, trees.value, trees.feature):
        digest.update(np.ascontiguousarray(arr).tobytes())
    now = datetime.now(UTC)
    return FraudModel(
        version=f"{now:%Y%m%d%H%M%S}-{digest.hexdigest()[:8]}",
        feature_names=names,
        feature_config=asdict(feature_config),
        trees=trees,
        params={**params, "ensemble": ensemble},
        trained_on=trained_on or {},
        created=now.isoformat(timespec="seconds"),
        fitted=(models, edges),
    )


def save(model: FraudModel, directory: Path) -> Path:
    """Write `fraud-model-<version>.joblib` and its `.json` sidecar; returns the joblib path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ARTIFACT_PREFIX}{model.version}.joblib"
    joblib.dump({"format": FORMAT, "trees": model.trees.stored()}, path, compress=3)
    sidecar = json.dumps(model.sidecar(), indent=2, sort_keys=True, allow_nan=False)
    path.with_suffix(".json").write_text(sidecar + "\n")
    return path


def load(path: Path) -> FraudModel:
    meta = json.loads(path.with_suffix(".json").read_text())
    blob = joblib.load(path)
    if blob.get("format") != FORMAT or meta.get("format") != FORMAT:
        raise ValueError(f"{path.name}: artifact format {blob.get('format')}, expected {FORMAT}")
    return FraudModel(
        version=meta["version"],
        feature_names=meta["feature_names"],
        feature_config=meta["feature_config"],
        trees=TreeEnsemble(**blob["trees"]),
        params=meta["params"],
        metrics=meta["metrics"],
        trained_on=meta["trained_on"],
        created=meta["created"],
    )


def load_default(directory: Path = ARTIFACTS_DIR) -> FraudModel:
    """The newest artifact in `directory` (versions start with their date)."""
    found = sorted(directory.glob(f"{ARTIFACT_PREFIX}*.joblib"))
    if not found:
        raise FileNotFoundError(f"no {ARTIFACT_PREFIX}*.joblib in {directory}")
    return load(found[-1])
