"""Online supervised LSTM fraud classifier over each card's recent transactions.

Input: (B, T, F) sequences (`TransactionFeatures.last_sequences`: the card's last T feature rows,
ending with the scored transaction). The LSTM's last hidden state, joined with the current row,
feeds a small MLP head (book: LSTM -> FC -> ReLU -> dropout -> output).

>>> import numpy as np
>>> det = LSTMClassifier(["a", "b"], LSTMClassifierConfig(lstm_hidden=4, head_hidden=4))
>>> det.score_many(np.zeros((3, 5, 2), np.float32)).shape
(3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stream_models.catalog import register
from stream_models.device import SeededDropout
from stream_models.errors import ModelError
from stream_models.mlp_classifier import TabularModelConfig, TorchTabularDetector


@dataclass(frozen=True)
class LSTMClassifierConfig(TabularModelConfig):
    lstm_hidden: int = 32  # chosen on the Handbook validation weeks over 64 (bench.fraud_quality --param)
    head_hidden: int = 128
    dropout: float = 0.2
    pos_weight: float = 1.0
    ema_decay: float = 0.99
    input_clip: float = 100.0
    window: int = 5  # sequence length T it is built for (any T is accepted when scoring)


class _LSTMNet(nn.Module):
    def __init__(self, n_features: int, cfg: LSTMClassifierConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, cfg.lstm_hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(cfg.lstm_hidden + n_features, cfg.head_hidden), nn.ReLU(),
                                  SeededDropout(cfg.dropout), nn.Linear(cfg.head_hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)  # h: (1, B, H)
        return self.head(torch.cat([h[-1], x[:, -1]], dim=1)).squeeze(-1)  # (B,)


@register("lstm_classifier")
class LSTMClassifier(TorchTabularDetector):
    """Sequence classifier on (B, T, F); one Adam step per `learn_many`."""

    config: LSTMClassifierConfig
    consumes = "sequences"
    learns_from_labels = True
    check_params: dict[str, Any] = {"lstm_hidden": 8, "head_hidden": 8, "window": 5}

    def __init__(self, feature_names: Sequence[str] | None = None, config: LSTMClassifierConfig | None = None,
                 *, n_features: int | None = None, **params: Any) -> None:
        super().__init__(feature_names, config or LSTMClassifierConfig(), n_features, **params)
        self.window = self.config.window

    def _build(self) -> nn.Module:
        return _LSTMNet(len(self.feature_names), self.config)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        if np.ndim(X) != 3:
            raise ModelError(f"LSTMClassifier expects (B, T, F) sequences, got shape {np.shape(X)}")
        return super()._tensor(X)

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pw = torch.tensor(self.config.pos_weight, device=z.device)
        return nn.functional.binary_cross_entropy_with_logits(self.net(z), y, pos_weight=pw)

    def _score(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        return torch.sigmoid((net or self.net)(z).double())  # (B,)

    def _contributions(self, z: torch.Tensor) -> torch.Tensor:
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNN backward refuses eval mode
            return super()._contributions(z)

    def score_one(self, x: Any) -> float:
        return float(self.score_many(np.asarray(x, np.float32)[None])[0])

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(np.asarray(x, np.float32)[None], None if y is None else np.asarray([y]))
