"""Half-Space Trees baseline: same scores as River's own pipeline, exact state, useful output."""

from __future__ import annotations

import numpy as np
import pytest
from river import anomaly, compose, preprocessing
from sklearn.metrics import roc_auc_score

from stream_models import catalog, checkpoint
from stream_models.errors import ModelError
from stream_models.halfspace_trees import HalfSpaceTreesDetector

PARAMS = {"n_trees": 5, "height": 6, "window_size": 50}


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (rng.random(n) < 0.05).astype(int)
    X[y == 1] += rng.choice([-5.0, 5.0], size=(int(y.sum()), 3)).astype(np.float32)
    return X, y


def test_scores_equal_rivers_minmax_scaler_plus_halfspace_trees_pipeline():
    X, _ = _data(400)
    pipeline = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=3, **PARAMS))
    detector = HalfSpaceTreesDetector(3, seed=3, **PARAMS)
    expected = []
    for row in X:
        x = dict(zip(detector.feature_names, map(float, row), strict=True))
        expected.append(pipeline.score_one(x))
        pipeline.learn_one(x)
    got = []
    for start in range(0, 400, 40):  # progressive validation in batches
        got.extend(detector.score_many(X[start : start + 40]))
        detector.learn_many(X[start : start + 40])
    # batch scoring uses the scaler as of the batch start; compare on the first row of each batch
    np.testing.assert_array_equal(np.array(got)[::40], np.array(expected)[::40])
    final = [pipeline.score_one(dict(zip(detector.feature_names, map(float, r), strict=True))) for r in X]
    np.testing.assert_array_equal(detector.score_many(X), final)


def test_outliers_score_higher_than_normal_rows():
    X, y = _data()
    detector = HalfSpaceTreesDetector(3, seed=0, **PARAMS)
    scores = []
    for start in range(0, len(X), 50):
        scores.extend(detector.score_many(X[start : start + 50]))
        detector.learn_many(X[start : start + 50])
    assert roc_auc_score(y[100:], np.array(scores)[100:]) > 0.9


def test_scores_are_zero_until_the_first_window_is_learned():
    X, _ = _data(60)
    detector = HalfSpaceTreesDetector(3, seed=0, **PARAMS)
    assert (detector.score_many(X) == 0.0).all()
    detector.learn_many(X[:49])
    assert (detector.score_many(X) == 0.0).all()
    detector.learn_one(X[49])
    assert (detector.score_many(X) > 0.0).any()


def test_different_seeds_build_different_trees():
    X, _ = _data(300)
    a = HalfSpaceTreesDetector(3, seed=1, **PARAMS)
    b = HalfSpaceTreesDetector(3, seed=2, **PARAMS)
    a.learn_many(X)
    b.learn_many(X)
    assert not np.array_equal(a.score_many(X), b.score_many(X))


@pytest.mark.parametrize("n_learned", [0, 30, 170])
@pytest.mark.parametrize("seed", [7, None])
def test_state_round_trip_is_exact_even_without_a_seed(n_learned, seed):
    X, _ = _data(400)
    original = HalfSpaceTreesDetector(feature_names=["amount", "velocity", "distance"], seed=seed, **PARAMS)
    original.learn_many(X[:n_learned])
    restored = HalfSpaceTreesDetector(3)
    restored.load_state_dict(checkpoint.from_bytes(checkpoint.to_bytes(original.state_dict())))
    assert restored.feature_names == ["amount", "velocity", "distance"]
    np.testing.assert_array_equal(restored.score_many(X), original.score_many(X))
    original.learn_many(X[n_learned:])
    restored.learn_many(X[n_learned:])
    np.testing.assert_array_equal(restored.score_many(X), original.score_many(X))
    assert restored.explain_many(X[:5]) == original.explain_many(X[:5])


def test_explanations_name_the_feature_that_is_off():
    rng = np.random.default_rng(0)
    detector = HalfSpaceTreesDetector(feature_names=["amount", "velocity", "distance"], seed=0, **PARAMS)
    detector.learn_many(rng.normal(size=(500, 3)).astype(np.float32))
    (top,) = detector.explain_many(np.array([[0.1, 8.0, -0.2]], dtype=np.float32), k=2)
    assert top[0][0] == "velocity" and top[0][1] > 5.0
    assert len(top) == 2 and top[1][1] <= top[0][1]


def test_dict_events_are_scored_like_arrays():
    X, _ = _data(200)
    detector = HalfSpaceTreesDetector(feature_names=["a", "b", "c"], seed=0, **PARAMS)
    detector.learn_many(X)
    event = {"c": float(X[3, 2]), "a": float(X[3, 0]), "b": float(X[3, 1])}
    assert detector.score_one(event) == detector.score_many(X[3:4])[0]


def test_wrong_shapes_and_names_are_refused():
    with pytest.raises(ModelError):
        HalfSpaceTreesDetector()
    with pytest.raises(ModelError):
        HalfSpaceTreesDetector(2, feature_names=["a", "b", "c"])
    with pytest.raises(ModelError):
        HalfSpaceTreesDetector(feature_names=["a", "a"])
    with pytest.raises(ModelError):
        HalfSpaceTreesDetector(3).score_many(np.zeros((2, 4), dtype=np.float32))


def test_feature_names_can_be_the_first_argument():
    from stream_models.halfspace_trees import HalfSpaceTrees

    detector = HalfSpaceTrees(["amount", "hour"], seed=3)
    assert detector.feature_names == ["amount", "hour"] and detector.config.seed == 3


def test_catalog_builds_it():
    detector = catalog.make("halfspace_trees", n_features=5, seed=0, window_size=10)
    assert isinstance(detector, HalfSpaceTreesDetector)
    assert detector.feature_names == ["f0", "f1", "f2", "f3", "f4"] and detector.config.window_size == 10
