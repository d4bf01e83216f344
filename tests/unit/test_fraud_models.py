"""The fraud models learn what they should: the MLP separates frauds, the LSTM uses the card's history,
the autoencoder ranks outliers high, the composite feeds the AE error to the classifier."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from evaluation.metrics import roc_auc
from stream_models import catalog, checks
from stream_models.dense_autoencoder import DenseAutoencoder, DenseAutoencoderConfig
from stream_models.errors import ModelError
from stream_models.fraud_detector import AE_FEATURE, FraudDetector, FraudDetectorConfig
from stream_models.lstm_classifier import LSTMClassifier, LSTMClassifierConfig
from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig, OnlineStandardizer

NAMES = ["amount", "risk", "noise"]


def fraud_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    X[:, 0] = X[:, 0] * 40 + 60  # unscaled amounts: the model must standardise on its own
    y = ((X[:, 0] > 120) | (X[:, 1] > 1.5)).astype(np.int64)
    return X, y


def train(det, X, y, steps=300, batch=128, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = rng.integers(0, len(X), batch)
        det.learn_many(X[i], y[i])


def test_mlp_learns_a_rare_fraud_pattern_from_unscaled_features():
    X, y = fraud_data(4000, 0)
    det = MLPClassifier(NAMES, MLPClassifierConfig(hidden=(32,), lr=3e-3, pos_weight=3.0, seed=1))
    before = roc_auc(y, det.score_many(X))
    train(det, X, y)
    Xt, yt = fraud_data(2000, 1)
    scores = det.score_many(Xt)
    assert roc_auc(yt, scores) > 0.97 > before
    assert scores.dtype == np.float64 and ((scores >= 0) & (scores <= 1)).all()
    top = det.explain_many(Xt[yt == 1][:5], k=1)
    assert all(row[0][0] in ("amount", "risk") for row in top)  # the noise feature never explains a fraud


def test_mlp_weight_averaging_scores_with_the_averaged_net():
    X, y = fraud_data(2000, 0)
    plain = MLPClassifier(NAMES, MLPClassifierConfig(hidden=(16,), seed=2, ema_decay=0.0))
    averaged = MLPClassifier(NAMES, MLPClassifierConfig(hidden=(16,), seed=2, ema_decay=0.9))
    for det in (plain, averaged):
        train(det, X, y, steps=50)
    assert averaged.scoring_net is not averaged.net
    assert not np.allclose(plain.score_many(X), averaged.score_many(X))
    state = averaged.state_dict()
    clone = MLPClassifier(NAMES, MLPClassifierConfig(hidden=(16,), seed=9, ema_decay=0.9))
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone.score_many(X), averaged.score_many(X))


def test_lstm_uses_the_cards_earlier_transactions():
    rng = np.random.default_rng(0)
    n, T = 3000, 4
    S = rng.normal(size=(n, T, 3)).astype(np.float32)
    y = (S[:, 0, 1] > 1.0).astype(np.int64)  # the label depends on the OLDEST transaction only
    det = LSTMClassifier(NAMES, LSTMClassifierConfig(lstm_hidden=16, head_hidden=16, lr=5e-3, seed=0))
    train(det, S, y, steps=400)
    St = rng.normal(size=(1000, T, 3)).astype(np.float32)
    yt = (St[:, 0, 1] > 1.0).astype(np.int64)
    assert roc_auc(yt, det.score_many(St)) > 0.9
    with pytest.raises(ModelError):
        det.score_many(St[:, -1])  # a flat (B, F) batch is refused


def test_autoencoder_ranks_outliers_above_normal_rows_and_explains_the_odd_feature():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 1))
    X = np.hstack([z, 2 * z + 0.05 * rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1)) * 0.1])
    X = (X * 10 + 50).astype(np.float32)  # unscaled; the AE standardises online
    det = DenseAutoencoder(NAMES, DenseAutoencoderConfig(hidden=(16, 2), lr=3e-3, seed=0))
    train(det, X, np.zeros(len(X)), steps=400)
    normal = X[:200]
    broken = normal.copy()
    broken[:, 1] = broken[:, 1] - 15 * np.sign(broken[:, 0] - 50 + 1e-3)  # breaks the x1 = 2 x0 relation
    scores = det.score_many(np.vstack([normal, broken]))
    assert roc_auc(np.r_[np.zeros(200), np.ones(200)], scores) > 0.95
    first = [row[0][0] for row in det.explain_many(broken[:20], k=1)]
    assert first.count("risk") + first.count("amount") >= 18


def test_composite_feeds_the_ae_error_to_the_classifier():
    X, y = fraud_data(3000, 0)
    det = FraudDetector(NAMES, FraudDetectorConfig(ae=DenseAutoencoderConfig(hidden=(8, 2), seed=0),
                                                   mlp=MLPClassifierConfig(hidden=(32,), lr=3e-3, seed=0, ema_decay=0.0)))
    assert det.mlp.feature_names == [*NAMES, AE_FEATURE]
    n_before = det.ae.n_learned
    det.learn_many(X[:256], y[:256])
    assert det.ae.n_learned - n_before == int((y[:256] == 0).sum())  # the AE only learns genuine rows
    train(det, X, y, steps=300)
    Xt, yt = fraud_data(1000, 1)
    assert roc_auc(yt, det.score_many(Xt)) > 0.95
    assert all(name in NAMES for row in det.explain_many(Xt[:10], k=3) for name, _ in row)


def test_standardizer_tracks_mean_and_variance_of_merged_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 3.0, size=(10_000, 2))
    s = OnlineStandardizer(2)
    for part in np.array_split(data, 7):
        s.update(torch.as_tensor(part))
    np.testing.assert_allclose(s.mean.numpy(), data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.var.numpy(), data.var(0), rtol=1e-9)


@pytest.mark.parametrize("name", ["mlp_classifier", "dense_autoencoder", "lstm_classifier", "fraud_detector"])
def test_fraud_detectors_are_in_the_catalog_and_checkpoint_safely(name):
    params = dict(getattr(catalog.factory(name), "check_params", {}))
    det = catalog.make(name, 4, seed=3, **params)
    X, y = checks.sample_data(det)
    det.learn_many(X, y)
    buf = io.BytesIO()
    torch.save(det.state_dict(), buf)
    buf.seek(0)
    clone = catalog.make(name, 4, seed=4, **params)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(clone.score_many(X), det.score_many(X))


def test_state_of_another_model_is_refused():
    mlp = MLPClassifier(NAMES, MLPClassifierConfig(hidden=(4,)))
    ae = DenseAutoencoder(NAMES, DenseAutoencoderConfig(hidden=(4, 2)))
    with pytest.raises(ModelError):
        ae.load_state_dict(mlp.state_dict())
    with pytest.raises(ModelError):
        MLPClassifier(["a", "b"], MLPClassifierConfig(hidden=(4,))).load_state_dict(mlp.state_dict())
