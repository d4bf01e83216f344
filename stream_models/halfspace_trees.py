"""River's Half-Space Trees behind the Detector protocol: the non-deep baseline.

Inputs are min-max scaled with running per-feature minima and maxima (vectorised; the same
as River's `MinMaxScaler` in front of the trees: each row is scaled with the extremes seen up
to and including itself when learning, with the current extremes when scoring). Scores are in
[0, 1], higher = more anomalous; they are 0 until the first `window_size` rows were learned.

State: River models are not tensors, so `state_dict` stores the trees as plain arrays (split
feature, split value, left/right mass per node, in depth-first order) plus the scaler, the
explanation statistics and the random generator's state. A restored detector is exact.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> hst = HalfSpaceTreesDetector(n_features=2, window_size=50, seed=1)
>>> hst.learn_many(rng.normal(size=(200, 2)).astype(np.float32))
>>> normal, outlier = hst.score_many(np.array([[0.0, 0.0], [6.0, -6.0]], dtype=np.float32))
>>> bool(outlier > normal)
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from river import anomaly
from river.tree.padded import make_padded_tree

from stream_models.base import RunningMoments, as_row, top_features
from stream_models.catalog import register
from stream_models.errors import ModelError


@dataclass(frozen=True, slots=True)
class HalfSpaceTreesConfig:
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    seed: int | None = 0


@register("halfspace_trees")
class HalfSpaceTreesDetector:
    """Half-Space Trees (Tan et al., 2011) via `river.anomaly.HalfSpaceTrees`.

    Parameters
    ----------
    n_features
        Number of input features, or the list of feature names.
    feature_names
        Names used in explanations (default f0, f1, ...).
    n_trees, height, window_size, seed
        As in River: more trees = smoother scores; the mass profile is refreshed every
        `window_size` learned rows.
    """

    consumes = "rows"
    learns_from_labels = False
    check_params: dict[str, Any] = {"n_trees": 4, "height": 5, "window_size": 20}

    def __init__(
        self,
        n_features: int | Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = 0,
        device: str | None = None,  # River runs on the CPU; accepted like every detector's
    ) -> None:
        if n_features is not None and not isinstance(n_features, int):
            n_features, feature_names = None, n_features
        if feature_names is None:
            if not n_features or n_features < 1:
                raise ModelError("give n_features >= 1 or feature_names")
            feature_names = [f"f{i}" for i in range(n_features)]
        elif n_features is not None and n_features != len(feature_names):
            raise ModelError(f"n_features={n_features} but {len(feature_names)} feature_names")
        if len(set(feature_names)) != len(feature_names):
            raise ModelError("feature_names must be unique")
        self.feature_names = list(feature_names)
        self.config = HalfSpaceTreesConfig(n_trees, height, window_size, seed)
        n = len(self.feature_names)
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self._min = np.full(n, np.inf)  # running per-feature extremes (the scaler)
        self._max = np.full(n, -np.inf)
        self._moments = RunningMoments(n)  # of the rows learned (explanations)

    # -- scoring -------------------------------------------------------------------------
    def score_many(self, X: np.ndarray) -> np.ndarray:
        """(B, F) -> (B,) float64 scores in [0, 1]."""
        X = self._check(X)
        scaled = self._scale(X, self._min, self._max)  # (B, F)
        score = self._model.score_one
        return np.fromiter(
            (score(self._as_dict(row)) for row in scaled.tolist()), dtype=np.float64, count=X.shape[0]
        )

    def score_one(self, x: Any) -> float:
        return float(self.score_many(as_row(x, self.feature_names))[0])

    # -- learning ------------------------------------------------------------------------
    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        """Learn the rows in order (labels are ignored: the model is unsupervised)."""
        X = self._check(X)
        if X.shape[0] == 0:
            return
        data = X.astype(np.float64)
        lows = np.fmin.accumulate(np.vstack([self._min, data]), axis=0)[1:]  # (B, F) extremes after each row
        highs = np.fmax.accumulate(np.vstack([self._max, data]), axis=0)[1:]
        learn = self._model.learn_one
        for row in self._scale(data, lows, highs).tolist():
            learn(self._as_dict(row))
        self._min, self._max = lows[-1].copy(), highs[-1].copy()
        self._moments.update(data)

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(as_row(x, self.feature_names))

    # -- explanations --------------------------------------------------------------------
    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-k features per row by |x - running mean| / running std."""
        contrib = self._moments.z(self._check(X))  # (B, F)
        return top_features(contrib, self.feature_names, min(k, contrib.shape[1]))

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        model = self._model
        version, internal, gauss = model.rng.getstate()
        state: dict[str, Any] = {
            "config": asdict(self.config),
            "feature_names": list(self.feature_names),
            "min": self._min.copy(),
            "max": self._max.copy(),
            **self._moments.state_dict(),  # n, mean, m2
            "rng": {"version": version, "internal": np.asarray(internal, dtype=np.int64), "gauss": gauss},
            "counter": model.counter,
            "first_window": model._first_window,
            "trees": None,
        }
        if model.trees:
            column = {name: i for i, name in enumerate(self.feature_names)}
            nodes = model._tree_nodes  # per tree, nodes in depth-first order
            state["trees"] = {
                "feature": np.array(
                    [[column[n.feature] if hasattr(n, "feature") else -1 for n in tree] for tree in nodes],
                    dtype=np.int64,
                ),
                "threshold": np.array([[getattr(n, "threshold", 0.0) for n in tree] for tree in nodes]),
                "l_mass": np.array([[n.l_mass for n in tree] for tree in nodes], dtype=np.int64),
                "r_mass": np.array([[n.r_mass for n in tree] for tree in nodes], dtype=np.int64),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fresh = HalfSpaceTreesDetector(feature_names=list(state["feature_names"]), **state["config"])
        self.__dict__.update(fresh.__dict__)
        self._min = np.asarray(state["min"], dtype=np.float64).copy()
        self._max = np.asarray(state["max"], dtype=np.float64).copy()
        self._moments.load_state_dict(state)
        model = self._model
        rng = state["rng"]
        model.rng.setstate((int(rng["version"]), tuple(int(v) for v in rng["internal"]), rng["gauss"]))
        model.counter = int(state["counter"])
        model._first_window = bool(state["first_window"])
        trees = state["trees"]
        if trees is not None:
            self._rebuild_trees(trees)

    def _rebuild_trees(self, trees: dict[str, np.ndarray]) -> None:
        model, names = self._model, self.feature_names
        limits = {name: (0.0, 1.0) for name in sorted(names)}
        scratch = random.Random(0)  # shapes only: every node is overwritten below
        model.trees = [
            make_padded_tree(dict(limits), height=model.height, padding=0.15, rng=scratch, r_mass=0, l_mass=0)
            for _ in range(model.n_trees)
        ]
        model._tree_nodes = [list(t.iter_dfs()) for t in model.trees]
        features, thresholds = trees["feature"].tolist(), trees["threshold"].tolist()
        l_mass, r_mass = trees["l_mass"].tolist(), trees["r_mass"].tolist()
        for t, nodes in enumerate(model._tree_nodes):
            for j, node in enumerate(nodes):
                if features[t][j] >= 0:
                    node.feature = names[features[t][j]]
                    node.threshold = thresholds[t][j]
                node.l_mass = l_mass[t][j]
                node.r_mass = r_mass[t][j]

    # -- helpers -------------------------------------------------------------------------
    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ModelError(f"expected X of shape (B, {len(self.feature_names)}), got {X.shape}")
        return X

    @staticmethod
    def _scale(X: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        span = high - low
        ok = np.isfinite(span) & (span > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, (X - np.where(ok, low, 0.0)) / np.where(ok, span, 1.0), 0.0)

    def _as_dict(self, row: list[float]) -> dict[str, float]:
        return dict(zip(self.feature_names, row, strict=True))


HalfSpaceTrees = HalfSpaceTreesDetector  # the short name, as in River
