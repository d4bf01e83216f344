"""The Detector protocol every model (torch or River) implements.

Scores are "higher = more anomalous". Batch methods take a float32 matrix `X` of shape
(B, F) (or (B, W, C) for windowed sensor models); single-event methods take a 1-D array
or a {feature: value} dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    feature_names: list[str]

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """(B, ...) -> (B,) float64 anomaly scores. Must not mutate X nor learn."""
        ...

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        """Update the model from a batch; `y` holds labels (1 = fraud/anomaly) when known."""
        ...

    def score_one(self, x: Any) -> float: ...

    def learn_one(self, x: Any, y: int | None = None) -> None: ...

    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-k contributing features per row, as (feature name, contribution)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def as_row(x: Any, feature_names: list[str]) -> np.ndarray:
    """A single event (1-D array or {feature: value} dict) as a (1, F) float32 batch."""
    if isinstance(x, dict):
        return np.asarray([[float(x[name]) for name in feature_names]], dtype=np.float32)
    arr = np.asarray(x, dtype=np.float32)
    return arr.reshape(1, *arr.shape)


def top_features(values: np.ndarray, names: Sequence[str], k: int, by: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
    """Per row, the k (name, value) pairs with the largest `by` (default: `values`), largest first."""
    order_key = values if by is None else by
    top = np.argsort(-order_key, axis=1, kind="stable")[:, :k]
    named = np.asarray(names, dtype=object)[top].tolist()
    picked = np.take_along_axis(np.asarray(values, np.float64), top, axis=1).tolist()
    return [list(zip(n, v, strict=True)) for n, v in zip(named, picked, strict=True)]


class RunningMoments:
    """Running per-feature mean and variance of rows (Chan et al.'s parallel update, one batch at a time), for
    explanations: `z(X)` is |x - mean| / std per feature (std 1 until two rows were seen).

    >>> m = RunningMoments(2)
    >>> m.update(np.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> m.z(np.array([[3.0, 1.0]])).tolist()
    [[2.0, 0.0]]
    """

    def __init__(self, n_features: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def update(self, data: np.ndarray) -> None:
        n_b = data.shape[0]
        if n_b == 0:
            return
        mean_b = data.mean(axis=0)
        m2_b = ((data - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    def z(self, X: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.m2 / self.n) if self.n > 1 else np.ones(len(self.mean))
        return np.abs(X - self.mean) / np.where(std > 0, std, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.m2 = np.asarray(state["m2"], dtype=np.float64).copy()
