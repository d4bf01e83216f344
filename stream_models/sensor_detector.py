"""Window detectors in torch, and the sensor detector that composes windows, model and alarms.

`TorchWindowDetector` is the shared Detector implementation of the window models
(dense autoencoder, LSTM autoencoder, LSTM forecaster): input X (B, W, C) float32, one
forward pass per batch on the picked device, score = mean error, explanation = per-channel
error. Subclasses only build the module and say how a batch is reconstructed or predicted.

`SensorDetector` chains `SensorWindows` -> detector -> threshold -> `AlarmFilter` for one
batch of sensor events, and gates learning: it learns only from ready windows that are
neither flagged nor close after an alarm.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from stream_models.alarm_filter import AlarmFilter
from stream_models.base import as_row, top_features
from stream_models.device import GLOBAL_RNG_LOCK, pick_device
from stream_models.errors import ModelError
from stream_models.sensor_windows import SensorWindows


@dataclass(frozen=True)
class WindowModelConfig:
    """Parameters shared by the window models."""

    window: int = 30  # W
    n_channels: int = 8  # C
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64  # minibatch size inside learn_many
    epochs_per_call: int = 1  # passes over the batch per learn_many call
    score_last: int | None = None  # score only the last k steps (None: the whole window)
    seed: int = 0
    device: str | None = None  # None: pick_device()


class TorchWindowDetector(ABC):
    """Base of the torch window detectors; subclasses build the module and map a batch to outputs."""

    config: WindowModelConfig
    consumes = "windows"
    learns_from_labels = False

    def __init__(self, config: WindowModelConfig, channels: Sequence[str] | None = None) -> None:
        self.config = config
        self.feature_names = list(channels) if channels else [f"ch{i}" for i in range(config.n_channels)]
        if len(self.feature_names) != config.n_channels:
            raise ModelError("channels and n_channels disagree")
        self.device = pick_device(config.device)
        self._gen = torch.Generator().manual_seed(config.seed)
        with GLOBAL_RNG_LOCK:
            torch_state = torch.random.get_rng_state()
            torch.manual_seed(config.seed)
            self.net = self._build().to(self.device)
            torch.random.set_rng_state(torch_state)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.n_updates = 0

    @property
    def window(self) -> int:
        return self.config.window

    # ---------------------------------------------------------------- subclass API
    @abstractmethod
    def _build(self) -> nn.Module:
        """The torch module, built from `self.config`."""

    @abstractmethod
    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target), both (B, T, C), for a window batch x (B, W, C)."""

    # ---------------------------------------------------------------- helpers
    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3 or X.shape[1:] != (self.config.window, self.config.n_channels):
            raise ModelError(
                f"expected X of shape (B, {self.config.window}, {self.config.n_channels}), got {X.shape}"
            )
        return torch.as_tensor(X).to(self.device)  # may share memory with X: only ever read

    def _channel_errors(self, X: np.ndarray) -> np.ndarray:
        """(B, C) mean squared error per channel over the scored steps."""
        if len(X) == 0:
            return np.zeros((0, self.config.n_channels))
        was_training = self.net.training
        if was_training:  # a frozen model stays in eval mode: no module walk per call
            self.net.eval()
        with torch.inference_mode():
            pred, target = self._outputs(self._tensor(X))  # (B, T, C)
            err = (pred - target).pow(2)  # (B, T, C)
            if self.config.score_last:
                err = err[:, -self.config.score_last :]
            per_channel = err.mean(dim=1)  # (B, C)
        if was_training:
            self.net.train()
        return per_channel.double().cpu().numpy()

    # ---------------------------------------------------------------- Detector
    def score_many(self, X: np.ndarray) -> np.ndarray:
        return self._channel_errors(X).mean(axis=1)

    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        errs = self._channel_errors(X)  # (B, C)
        return top_features(errs, self.feature_names, k)

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        """Gradient steps on the windows (only rows with y == 0 when labels are given)."""
        xt = self._tensor(X)
        if y is not None:
            keep = torch.as_tensor(np.asarray(y) == 0, device=self.device)
            xt = xt[keep]
        if len(xt) == 0:
            return
        self.net.train()
        bs = self.config.batch_size
        for _ in range(self.config.epochs_per_call):
            order = torch.randperm(len(xt), generator=self._gen).to(self.device)
            for start in range(0, len(xt), bs):
                pred, target = self._outputs(xt[order[start : start + bs]])
                loss = (pred - target).pow(2).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.n_updates += 1
        self.net.eval()  # scoring runs in eval mode: left there, a scoring call needs no module walk

    def fit(self, X: np.ndarray, epochs: int) -> TorchWindowDetector:
        """Batch training (warm-up): `epochs` shuffled passes over X."""
        for _ in range(epochs):
            self.learn_many(X)
        return self

    def score_one(self, x: Any) -> float:
        return float(self.score_many(self._one(x))[0])

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(self._one(x), None if y is None else np.array([y]))

    def _one(self, x: Any) -> np.ndarray:
        if isinstance(x, dict):  # {channel: [W values]}
            return np.asarray([[x[c] for c in self.feature_names]], dtype=np.float32).transpose(0, 2, 1)
        return as_row(x, self.feature_names)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "config": asdict(self.config),
            "feature_names": list(self.feature_names),
            "model": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self._gen.get_state(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != type(self).__name__:
            raise ModelError(f"state of a {state['kind']} cannot load into a {type(self).__name__}")
        if state["config"] != asdict(self.config):
            raise ModelError("state was saved with a different configuration")
        self.feature_names = list(state["feature_names"])
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._gen.set_state(state["generator"])
        self.n_updates = int(state["n_updates"])


@dataclass
class SensorDecision:
    keys: list[str]
    scores: np.ndarray  # (B,) float64, NaN where the window is not ready
    flags: np.ndarray  # (B,) bool, raw threshold decisions
    alarms: np.ndarray  # (B,) bool, after the persistence filter
    learned: np.ndarray  # (B,) bool, rows the detector learned from
    explanations: list[list[tuple[str, float]]] = field(default_factory=list)  # per alarm row


class SensorDetector:
    """Windows -> detector -> threshold -> alarm filter, with strictly gated learning.

    `threshold` is any object with `classify_many(scores) -> bool array` (and optionally
    `update_many(scores, flags)`). `learn=False` freezes the model (the SKAB protocol's
    best setting after warm-up); with `learn=True` only ready, unflagged rows of devices
    that have been quiet for `quiet_rows` rows are learned from.
    """

    def __init__(
        self,
        windows: SensorWindows,
        detector: TorchWindowDetector,
        threshold: Any,
        alarm_filter: AlarmFilter | None = None,
        learn: bool = False,
        quiet_rows: int = 60,
        explain_k: int = 3,
    ) -> None:
        self.windows = windows
        self.detector = detector
        self.threshold = threshold
        self.alarm_filter = alarm_filter
        self.learn = learn
        self.quiet_rows = quiet_rows
        self.explain_k = explain_k
        self._last_flag: OrderedDict[str, int] = OrderedDict()  # device -> rows since its last flag (LRU)

    def process(self, events: Sequence[Any]) -> SensorDecision:
        keys, X, ready = self.windows.update_many(events)  # X (B, W, C)
        scores = np.full(len(keys), np.nan)
        flags = np.zeros(len(keys), dtype=bool)
        if ready.any():
            scores[ready] = self.detector.score_many(X[ready])
            flags[ready] = self.threshold.classify_many(scores[ready])
        alarms = self.alarm_filter.update_many(keys, flags) if self.alarm_filter else flags.copy()
        quiet = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            since = 0 if flags[i] else self._last_flag.pop(key, self.quiet_rows) + 1
            self._last_flag[key] = since
            quiet[i] = since > self.quiet_rows
        while len(self._last_flag) > self.windows.config.max_devices:
            self._last_flag.popitem(last=False)
        learned = ready & quiet & self.learn
        if learned.any():
            self.detector.learn_many(X[learned])
            if hasattr(self.threshold, "update_many"):
                self.threshold.update_many(scores[learned], flags[learned])
        explanations = []  # one list per alarm, in row order
        if alarms.any() and self.explain_k > 0:
            explanations = self.detector.explain_many(X[alarms], self.explain_k)
        return SensorDecision(keys, scores, flags, alarms, learned, explanations)
