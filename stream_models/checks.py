"""The generic check suite every detector passes (River's `estimator_checks` habit).

Each check takes a `factory` (no arguments -> a fresh detector, built with a fixed seed) and
sample data `X` ((B, F) or (B, W, C)) with labels `y`, and raises AssertionError with a clear
message when the detector breaks the Detector contract. `sample_data` makes suitable data;
`yield_checks` lists the checks.

    for check in yield_checks():
        check(lambda: catalog.make("halfspace_trees", 4, seed=0), *sample_data(detector))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np

from stream_models import checkpoint
from stream_models.base import Detector

Factory = Callable[[], Detector]


def sample_data(detector: Detector, n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float32 inputs of the detector's shape, with ~10% shifted "anomalies" labelled 1."""
    rng = np.random.default_rng(seed)
    n_features = len(detector.feature_names)
    if getattr(detector, "consumes", "rows") != "rows":
        window = int(detector.window)  # type: ignore[attr-defined]
        t = np.arange(window)[None, :, None] + rng.integers(0, 100, (n, 1, 1))
        X = np.sin(0.3 * t + np.arange(n_features)[None, None, :]) + 0.1 * rng.normal(
            size=(n, window, n_features)
        )
    else:
        X = rng.normal(size=(n, n_features))
    y = (rng.random(n) < 0.1).astype(np.int64)
    y[:2] = [0, 1]
    X[y == 1] += 3.0
    return X.astype(np.float32), y


def check_scoring_before_learning_is_safe(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """An untrained detector returns finite float64 scores of shape (B,)."""
    scores = factory().score_many(X)
    assert isinstance(scores, np.ndarray), f"score_many returned {type(scores).__name__}, not an ndarray"
    assert scores.shape == (X.shape[0],), (
        f"score_many returned shape {scores.shape}, expected ({X.shape[0]},)"
    )
    assert scores.dtype == np.float64, f"score_many returned dtype {scores.dtype}, expected float64"
    assert np.isfinite(scores).all(), "an untrained detector returned non-finite scores"
    assert np.isfinite(factory().score_one(X[0])), "an untrained detector returned a non-finite score_one"


def check_learn_returns_none(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """learn_many and learn_one return None (River's convention: learning is a side effect)."""
    detector = factory()
    results = [
        detector.learn_many(X, y),  # type: ignore[func-returns-value]
        detector.learn_one(X[0], int(y[0])),  # type: ignore[func-returns-value]
        detector.learn_many(X),  # type: ignore[func-returns-value]
    ]
    assert results == [None, None, None], f"learn_many/learn_one/learn_many(X) returned {results}, not None"


def check_input_not_mutated(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """Neither scoring, learning nor explaining changes the caller's arrays."""
    X_before, y_before = X.copy(), y.copy()
    detector = factory()
    detector.score_many(X)
    detector.learn_many(X, y)
    detector.score_many(X)
    detector.explain_many(X, k=2)
    detector.score_one(X[0])
    detector.learn_one(X[1], int(y[1]))
    np.testing.assert_array_equal(X, X_before, err_msg="the detector mutated its input X")
    np.testing.assert_array_equal(y, y_before, err_msg="the detector mutated its labels y")


def check_scoring_does_not_learn(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """Scoring twice gives the same scores (score_many must not update the model)."""
    detector = factory()
    detector.learn_many(X, y)
    first = detector.score_many(X)
    np.testing.assert_array_equal(detector.score_many(X), first, err_msg="score_many changed the model")


def check_batch_equals_one_by_one(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """score_many(X)[i] equals score_one(X[i]) (up to float32 batching noise)."""
    detector = factory()
    detector.learn_many(X, y)
    batch = detector.score_many(X)
    single = np.array([detector.score_one(row) for row in X])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-6, err_msg="score_many != score_one per row")


def check_seeded_clones_agree(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """Two detectors built with the same seed and fed the same data score identically."""
    a, b = factory(), factory()
    half = X.shape[0] // 2
    for detector in (a, b):
        detector.learn_many(X[:half], y[:half])
        detector.learn_many(X[half:], y[half:])
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X), err_msg="seeded clones disagree")


def check_state_dict_round_trips(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """A fresh detector loaded with a checkpointed state scores, and keeps learning, identically."""
    half = X.shape[0] // 2
    original = factory()
    original.learn_many(X[:half], y[:half])
    state = checkpoint.from_bytes(checkpoint.to_bytes(original.state_dict()))  # weights_only-safe state
    restored = factory()
    restored.learn_many(X[half:], y[half:])  # loading must replace, not merge with, existing state
    restored.load_state_dict(copy.deepcopy(state))
    np.testing.assert_array_equal(
        restored.score_many(X), original.score_many(X), err_msg="restored detector scores differently"
    )
    original.learn_many(X[half:], y[half:])
    restored.learn_many(X[half:], y[half:])
    np.testing.assert_array_equal(
        restored.score_many(X), original.score_many(X), err_msg="restored detector learns differently"
    )


def check_explain_many(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """explain_many gives, per row, min(k, F) (feature name, finite value) pairs."""
    detector = factory()
    detector.learn_many(X, y)
    names = set(detector.feature_names)
    for k in (1, 3):
        explanations = detector.explain_many(X, k=k)
        assert len(explanations) == X.shape[0], "explain_many must return one list per row"
        for row in explanations:
            assert len(row) == min(k, len(names)), f"expected {min(k, len(names))} features, got {len(row)}"
            for name, value in row:
                assert name in names, f"unknown feature name {name!r} in explanation"
                assert isinstance(value, float) and np.isfinite(value), f"bad contribution {value!r}"


def check_feature_names(factory: Factory, X: np.ndarray, y: np.ndarray) -> None:
    """feature_names is a list of unique str, one per feature (per channel for windowed input)."""
    names = factory().feature_names
    assert isinstance(names, list) and all(isinstance(n, str) for n in names), (
        "feature_names must be list[str]"
    )
    assert len(set(names)) == len(names) == X.shape[-1], "feature_names must be unique, one per feature"


CHECKS: tuple[Callable[[Factory, np.ndarray, np.ndarray], None], ...] = (
    check_feature_names,
    check_scoring_before_learning_is_safe,
    check_learn_returns_none,
    check_input_not_mutated,
    check_scoring_does_not_learn,
    check_batch_equals_one_by_one,
    check_seeded_clones_agree,
    check_state_dict_round_trips,
    check_explain_many,
)


def yield_checks() -> Iterator[Callable[[Factory, np.ndarray, np.ndarray], None]]:
    yield from CHECKS
