"""LSTM forecaster: predicts the last reading of a window from the W-1 readings before it.

Score = squared forecast error of the last step, averaged over channels;
explanation = per-channel squared error.

>>> import numpy as np
>>> det = LSTMForecaster(LSTMForecasterConfig(window=4, n_channels=2, hidden=8))
>>> det.score_many(np.zeros((3, 4, 2), np.float32)).shape
(3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stream_models.catalog import register
from stream_models.errors import ModelError
from stream_models.sensor_detector import TorchWindowDetector, WindowModelConfig


@dataclass(frozen=True)
class LSTMForecasterConfig(WindowModelConfig):
    hidden: int = 32
    num_layers: int = 1

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ModelError("the forecaster needs window >= 2")


class _Forecaster(nn.Module):
    def __init__(self, cfg: LSTMForecasterConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(cfg.n_channels, cfg.hidden, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.n_channels)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(history)  # (B, W-1, H)
        return self.head(out[:, -1])  # (B, C): next reading


class LSTMForecaster(TorchWindowDetector):
    """Next-step LSTM forecaster over (B, W, C) windows."""

    config: LSTMForecasterConfig

    def __init__(
        self, config: LSTMForecasterConfig | None = None, channels: Sequence[str] | None = None
    ) -> None:
        super().__init__(config or LSTMForecasterConfig(), channels)

    def _build(self) -> nn.Module:
        return _Forecaster(self.config)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.net(x[:, :-1])  # (B, C)
        return pred.unsqueeze(1), x[:, -1:]  # (B, 1, C) each


def make_lstm_forecaster(
    n_features: int, feature_names: Sequence[str] | None = None, **params: Any
) -> LSTMForecaster:
    """Catalog factory: `LSTMForecasterConfig` fields as keyword arguments (window, hidden, seed, ...)."""
    return LSTMForecaster(LSTMForecasterConfig(n_channels=n_features, **params), feature_names)


make_lstm_forecaster.consumes = "windows"  # type: ignore[attr-defined]
make_lstm_forecaster.check_params = {"window": 6, "hidden": 8}  # type: ignore[attr-defined]
register("lstm_forecaster")(make_lstm_forecaster)
