"""Thresholds: warm-up, alert rate, protection from flagged scores, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_models import checkpoint
from stream_models.errors import ModelError
from stream_models.thresholds import PeaksOverThreshold, QuantileThreshold, normal_mask, protect


def _stream(threshold, generate, batches: int, batch: int = 1000, skip: int = 20) -> float:
    """Run classify -> update over a stream; the alert rate after `skip` batches."""
    flagged = total = 0
    for i in range(batches):
        scores = generate(batch)
        flags = threshold.classify_many(scores)
        threshold.update_many(scores, flags)
        if i >= skip:
            flagged += int(flags.sum())
            total += batch
    return flagged / total


@pytest.mark.parametrize(
    "make", [lambda: QuantileThreshold(0.99, warmup=500), lambda: PeaksOverThreshold(warmup=500)]
)
def test_nothing_is_flagged_during_warmup(make):
    threshold = make()
    assert threshold.threshold == math.inf
    threshold.update_many(np.arange(499.0))
    assert threshold.threshold == math.inf
    assert not threshold.classify_many(np.array([1e300, np.inf])).any()
    threshold.update_many(np.arange(10.0))
    assert math.isfinite(threshold.threshold)


def test_quantile_threshold_holds_the_target_alert_rate():
    rng = np.random.default_rng(1)
    threshold = QuantileThreshold(target_alert_rate=0.01, warmup=1000, window=20_000)
    rate = _stream(threshold, lambda n: rng.normal(size=n), batches=150)
    assert 0.007 < rate < 0.013


@pytest.mark.parametrize("estimator, tolerance", [("mle", 0.3), ("moments", 1.0)])
@pytest.mark.parametrize("tail", ["exponential", "normal", "pareto"])
def test_peaks_over_threshold_holds_the_target_alert_rate(tail, estimator, tolerance):
    rng = np.random.default_rng(2)
    generate = {
        "exponential": lambda n: rng.standard_exponential(n),
        "normal": lambda n: rng.normal(size=n),
        "pareto": lambda n: rng.pareto(3.0, n),
    }[tail]
    threshold = PeaksOverThreshold(target_alert_rate=2e-3, estimator=estimator)
    rate = _stream(threshold, generate, batches=250)
    assert abs(rate - 2e-3) / 2e-3 < tolerance


def test_peaks_over_threshold_fits_the_known_tail():
    rng = np.random.default_rng(3)
    threshold = PeaksOverThreshold(target_alert_rate=1e-3)
    _stream(threshold, lambda n: rng.pareto(4.0, n), batches=200)
    gamma, _ = threshold.gpd
    assert abs(gamma - 0.25) < 0.1  # Lomax(4) excesses are GPD with shape 1/4


@pytest.mark.parametrize(
    "make", [lambda: QuantileThreshold(0.99, warmup=1000), lambda: PeaksOverThreshold(1e-3, warmup=1000)]
)
def test_a_burst_of_extreme_anomalies_does_not_raise_the_threshold_much(make):
    rng = np.random.default_rng(4)
    threshold = make()
    _stream(threshold, lambda n: rng.normal(size=n), batches=60)
    before = threshold.threshold
    for _ in range(10):  # 10 batches with 0.5% huge anomalies each
        scores = rng.normal(size=1000)
        scores[:5] = 1e6
        threshold.update_many(scores, threshold.classify_many(scores))
    assert threshold.threshold < before * 1.25


@pytest.mark.parametrize(
    "make", [lambda: QuantileThreshold(0.99, warmup=1000, window=20_000), lambda: PeaksOverThreshold(1e-2)]
)
def test_the_threshold_follows_a_lasting_upward_shift_of_all_scores(make):
    rng = np.random.default_rng(5)
    threshold = make()
    _stream(threshold, lambda n: rng.normal(size=n), batches=50)
    before = threshold.threshold
    rate = _stream(threshold, lambda n: rng.normal(loc=0.5, size=n), batches=300, skip=200)
    assert threshold.threshold > before + 0.3
    assert rate < 0.02


def test_constant_scores_raise_no_alerts():
    for threshold in (QuantileThreshold(0.99, warmup=100), PeaksOverThreshold(warmup=100)):
        for _ in range(5):
            scores = np.zeros(100)
            assert not threshold.classify_many(scores).any()
            threshold.update_many(scores, threshold.classify_many(scores))
        assert threshold.threshold > 0.0
        assert threshold.classify_many(np.array([1.0]))[0]


def test_nan_scores_are_ignored_when_learning():
    threshold = QuantileThreshold(0.5, warmup=4, refresh_every=1)
    threshold.update_many(np.array([1.0, np.nan, 2.0, 3.0, 4.0]))
    assert threshold.threshold == pytest.approx(3.0, abs=1e-12)  # the "higher" median of 1..4
    assert not threshold.classify_many(np.array([np.nan]))[0]
    assert threshold.classify_many(np.array([np.inf]))[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantileThreshold(0.98, warmup=300, window=700, refresh_every=64),
        lambda: PeaksOverThreshold(5e-3, warmup=300),
        lambda: PeaksOverThreshold(5e-3, warmup=300, estimator="moments"),
    ],
)
@pytest.mark.parametrize("n_before", [100, 2000])
def test_state_round_trip_through_a_checkpoint_continues_identically(make, n_before):
    rng = np.random.default_rng(6)
    original = make()
    scores = rng.gumbel(size=n_before)
    original.update_many(scores, original.classify_many(scores))
    restored = make()
    restored.load_state_dict(checkpoint.from_bytes(checkpoint.to_bytes(original.state_dict())))
    assert restored.threshold == original.threshold
    for _ in range(5):
        batch = rng.gumbel(size=250)
        np.testing.assert_array_equal(restored.classify_many(batch), original.classify_many(batch))
        original.update_many(batch, original.classify_many(batch))
        restored.update_many(batch, restored.classify_many(batch))
        assert restored.threshold == original.threshold


def test_reset_forgets_or_keeps_the_threshold():
    rng = np.random.default_rng(7)
    for threshold in (QuantileThreshold(0.99, warmup=500), PeaksOverThreshold(warmup=500)):
        threshold.update_many(rng.normal(size=2000))
        learned = threshold.threshold
        threshold.reset(keep_threshold=True)
        assert threshold.threshold == learned
        threshold.update_many(rng.normal(loc=10.0, size=2000))
        assert threshold.threshold > learned + 5
        threshold.reset()
        assert threshold.threshold == math.inf


def test_loading_the_wrong_kind_of_state_is_refused():
    with pytest.raises(ModelError):
        QuantileThreshold().load_state_dict(PeaksOverThreshold().state_dict())
    with pytest.raises(ModelError):
        PeaksOverThreshold().load_state_dict(QuantileThreshold().state_dict())


def test_bad_parameters_are_refused():
    with pytest.raises(ModelError):
        QuantileThreshold(q=0.9, target_alert_rate=0.1)
    with pytest.raises(ModelError):
        QuantileThreshold(q=1.5)
    with pytest.raises(ModelError):
        PeaksOverThreshold(target_alert_rate=0.05, initial_quantile=0.98)
    with pytest.raises(ModelError):
        QuantileThreshold().update_many(np.zeros(3), np.zeros(2, dtype=bool))


def test_normal_mask_and_protect_keep_only_rows_safe_to_learn_from():
    X = np.arange(8.0).reshape(4, 2)
    flags = np.array([False, True, False, False])
    labels = np.array([0, 0, 1, -1])
    assert normal_mask(None) is None
    np.testing.assert_array_equal(normal_mask(flags), [True, False, True, True])
    np.testing.assert_array_equal(normal_mask(flags, labels), [True, False, False, True])
    np.testing.assert_array_equal(protect(X, flags, labels), X[[0, 3]])
    assert protect(X, None) is X


def test_a_ceiling_flags_every_probability_above_it_however_many():
    """A classifier's threshold with a 0.5 ceiling: a day when a tenth of the events are likely frauds flags them
    all, where the 99th percentile alone would flag one in a hundred; the ceiling holds after a checkpoint."""
    rng = np.random.default_rng(4)
    threshold = QuantileThreshold(0.99, warmup=100, window=1000, refresh_every=100, ceiling=0.5)
    assert not threshold.classify_many(np.array([0.9])).any(), "still warming up"
    likely = np.concatenate([rng.uniform(0, 0.2, 900), rng.uniform(0.6, 1.0, 100)])
    threshold.update_many(likely)
    assert threshold.threshold == 0.5 and threshold.classify_many(likely).sum() == 100
    plain = QuantileThreshold(0.99, warmup=100, window=1000, refresh_every=100)
    plain.update_many(likely)
    assert plain.classify_many(likely).sum() <= 10
    restored = QuantileThreshold(0.99)
    restored.load_state_dict(checkpoint.from_bytes(checkpoint.to_bytes(threshold.state_dict())))
    assert restored.threshold == 0.5
    later = QuantileThreshold(0.99, warmup=100, window=1000, refresh_every=100)
    later.update_many(likely)
    later.set_ceiling(0.5)
    assert later.classify_many(likely).sum() == 100, "a ceiling set later applies at once"
