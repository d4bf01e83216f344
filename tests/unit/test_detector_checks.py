"""Every registered detector passes the generic check suite (stream_models.checks)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from stream_models import catalog, checks
from stream_models.base import Detector
from stream_models.errors import ModelError

N_FEATURES = 4


def _factory(name: str):
    params = dict(getattr(catalog.factory(name), "check_params", {}))
    return functools.partial(catalog.make, name, N_FEATURES, seed=0, **params)


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", catalog.names())
def test_detector_passes_check(name, check):
    factory = _factory(name)
    detector = factory()
    assert isinstance(detector, Detector)
    X, y = checks.sample_data(detector)
    if catalog.consumes(name) != "rows":
        assert X.ndim == 3 and X.shape[2] == N_FEATURES
    else:
        assert X.shape == (96, N_FEATURES)
    check(factory, X, y)


def test_catalog_knows_the_baseline_and_refuses_unknown_names():
    assert "halfspace_trees" in catalog.names()
    assert catalog.consumes("halfspace_trees") == "rows"
    assert catalog.consumes("lstm_classifier") == "sequences"
    assert catalog.learns_from_labels("mlp_classifier") and not catalog.learns_from_labels("dense_autoencoder")
    with pytest.raises(ModelError, match="unknown detector"):
        catalog.make("no_such_detector", 3)


def test_register_refuses_a_second_detector_under_the_same_name():
    @catalog.register("test_only_detector")
    class First:
        consumes = "rows"

    try:
        with pytest.raises(ModelError):

            @catalog.register("test_only_detector")
            class Second:
                pass

        with pytest.raises(ModelError):

            @catalog.register("test_only_bad_kind")
            class BadKind:
                consumes = "graph"

    finally:
        catalog.DETECTORS.pop("test_only_detector", None)


class _Broken:
    """A detector that breaks the contract in several ways, to prove the checks can fail."""

    consumes = "rows"

    def __init__(self) -> None:
        self.feature_names = [f"f{i}" for i in range(N_FEATURES)]
        self.seen = 0.0

    def score_many(self, X):
        self.seen += 1.0  # scoring changes the model
        X *= 1.0
        X[:, 0] = 0.0  # and mutates the input
        return np.full(X.shape[0], self.seen + np.random.random(), dtype=np.float32)  # not float64

    def score_one(self, x):
        return float(np.random.random())

    def learn_many(self, X, y=None):
        return self

    def learn_one(self, x, y=None):
        return None

    def explain_many(self, X, k=3):
        return [[("nope", 1.0)] for _ in range(len(X))]

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize(
    "check", [c for c in checks.CHECKS if c is not checks.check_feature_names], ids=lambda c: c.__name__
)
def test_each_check_catches_a_broken_detector(check):
    X, y = checks.sample_data(_Broken())
    with pytest.raises(AssertionError):
        check(_Broken, X, y)


def test_feature_names_check_catches_duplicate_names():
    class Duplicated(_Broken):
        def __init__(self) -> None:
            super().__init__()
            self.feature_names = ["a", "a", "b", "c"]

    X, y = checks.sample_data(Duplicated())
    with pytest.raises(AssertionError):
        checks.check_feature_names(Duplicated, X, y)


def test_sample_data_has_the_windowed_shape_for_window_detectors():
    class Windowed:
        consumes = "windows"
        window = 12
        feature_names = ["a", "b", "c"]

    X, y = checks.sample_data(Windowed(), n=10)
    assert X.shape == (10, 12, 3) and X.dtype == np.float32
    assert y.shape == (10,) and set(np.unique(y)) <= {0, 1}
