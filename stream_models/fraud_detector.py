"""Composite fraud detector: a dense autoencoder learns what normal transactions look like, and its
(log) reconstruction error is one more input of the supervised MLP classifier (the handbook's
semi-supervised "W1B" idea, run online). Score = fraud probability.

>>> import numpy as np
>>> det = FraudDetector(["a", "b"], FraudDetectorConfig(ae=DenseAutoencoderConfig(hidden=(4, 2)),
...                                                      mlp=MLPClassifierConfig(hidden=(8,))))
>>> det.learn_many(np.ones((4, 2), np.float32), np.array([0, 0, 0, 1]))
>>> det.score_many(np.ones((2, 2), np.float32)).shape
(2,)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_models.base import as_row, top_features
from stream_models.catalog import register
from stream_models.dense_autoencoder import DenseAutoencoder, DenseAutoencoderConfig
from stream_models.errors import ModelError
from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig, resolve_feature_names

AE_FEATURE = "AE_LOG_RECONSTRUCTION_ERROR"


@dataclass(frozen=True)
class FraudDetectorConfig:
    ae: DenseAutoencoderConfig = field(default_factory=DenseAutoencoderConfig)
    mlp: MLPClassifierConfig = field(default_factory=MLPClassifierConfig)


@register("fraud_detector")
class FraudDetector:
    """AE error + features -> MLP. `learn_many(X, y)`: the AE learns from rows with y == 0 only."""

    consumes = "rows"
    learns_from_labels = True
    check_params: dict[str, Any] = {"ae_hidden": (8, 2), "mlp_hidden": (16,)}

    def __init__(self, feature_names: Sequence[str] | None = None, config: FraudDetectorConfig | None = None,
                 *, n_features: int | None = None, seed: int | None = None,
                 ae_hidden: tuple[int, ...] | None = None, mlp_hidden: tuple[int, ...] | None = None,
                 device: str | None = None) -> None:
        cfg = config or FraudDetectorConfig()
        ae, mlp = cfg.ae, cfg.mlp
        if seed is not None:
            ae, mlp = dataclasses.replace(ae, seed=seed), dataclasses.replace(mlp, seed=seed)
        if device is not None:
            ae, mlp = dataclasses.replace(ae, device=device), dataclasses.replace(mlp, device=device)
        if ae_hidden is not None:
            ae = dataclasses.replace(ae, hidden=tuple(ae_hidden))
        if mlp_hidden is not None:
            mlp = dataclasses.replace(mlp, hidden=tuple(mlp_hidden))
        self.config = FraudDetectorConfig(ae, mlp)
        self.feature_names = resolve_feature_names(feature_names, n_features)
        self.ae = DenseAutoencoder(self.feature_names, self.config.ae)
        self.mlp = MLPClassifier([*self.feature_names, AE_FEATURE], self.config.mlp)

    def _augment(self, X: np.ndarray) -> np.ndarray:
        err = self.ae.score_many(X)  # (B,)
        return np.concatenate([np.asarray(X, np.float32), np.log(err + 1e-6).astype(np.float32)[:, None]], axis=1)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return self.mlp.score_many(self._augment(X))

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        yy = np.zeros(len(X), np.float32) if y is None else np.asarray(y, np.float32).reshape(-1)
        normal = yy == 0
        if normal.any():
            self.ae.learn_many(np.asarray(X)[normal])
        self.mlp.learn_many(self._augment(X), yy)

    def score_one(self, x: Any) -> float:
        return float(self.score_many(as_row(x, self.feature_names))[0])

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(as_row(x, self.feature_names), None if y is None else np.asarray([y]))

    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """MLP gradient x input per feature; the AE-error input's share is spread over the features
        in proportion to their reconstruction errors."""
        if len(X) == 0:
            return []
        mlp = self.mlp
        mlp.scoring_net.eval()
        z = mlp.scaler(mlp._tensor(self._augment(X)))
        contrib = mlp._contributions(z).detach().double().cpu().numpy()  # (B, F + 1)
        err = self.ae._contributions(self.ae.scaler(self.ae._tensor(X))).double().cpu().numpy()  # (B, F)
        share = err / np.maximum(err.sum(1, keepdims=True), 1e-12)
        total = contrib[:, :-1] + contrib[:, -1:] * share  # (B, F)
        return top_features(total, self.feature_names, k, by=np.abs(total))

    @property
    def learning_rate(self) -> float:
        return self.mlp.learning_rate

    def set_learning_rate(self, lr: float) -> None:
        self.mlp.set_learning_rate(lr)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "ae": self.ae.state_dict(), "mlp": self.mlp.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != type(self).__name__:
            raise ModelError(f"cannot load a {state.get('kind')} state into FraudDetector")
        self.ae.load_state_dict(state["ae"])
        self.mlp.load_state_dict(state["mlp"])
