"""LSTM encoder-decoder over windows: the encoder's last state is repeated W times and decoded.

Score = mean squared reconstruction error (optionally of the last steps only);
explanation = per-channel error.

>>> import numpy as np
>>> det = LSTMAutoencoder(LSTMAutoencoderConfig(window=4, n_channels=2, hidden=8))
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
from stream_models.sensor_detector import TorchWindowDetector, WindowModelConfig


@dataclass(frozen=True)
class LSTMAutoencoderConfig(WindowModelConfig):
    hidden: int = 32
    latent: int = 16
    num_layers: int = 1


class _LSTMAE(nn.Module):
    def __init__(self, cfg: LSTMAutoencoderConfig) -> None:
        super().__init__()
        self.encoder = nn.LSTM(cfg.n_channels, cfg.hidden, cfg.num_layers, batch_first=True)
        self.to_latent = nn.Linear(cfg.hidden, cfg.latent)
        self.decoder = nn.LSTM(cfg.latent, cfg.hidden, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, W, C = x.shape
        _, (h, _) = self.encoder(x)  # h (layers, B, H)
        z = self.to_latent(h[-1])  # (B, latent)
        dec, _ = self.decoder(z.unsqueeze(1).expand(B, W, z.shape[-1]))  # (B, W, H)
        return self.head(dec)  # (B, W, C)


class LSTMAutoencoder(TorchWindowDetector):
    """LSTM autoencoder over (B, W, C) windows."""

    config: LSTMAutoencoderConfig

    def __init__(
        self, config: LSTMAutoencoderConfig | None = None, channels: Sequence[str] | None = None
    ) -> None:
        super().__init__(config or LSTMAutoencoderConfig(), channels)

    def _build(self) -> nn.Module:
        return _LSTMAE(self.config)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x  # (B, W, C) each


def make_lstm_autoencoder(
    n_features: int, feature_names: Sequence[str] | None = None, **params: Any
) -> LSTMAutoencoder:
    """Catalog factory: `LSTMAutoencoderConfig` fields as keyword arguments (window, hidden, seed, ...)."""
    return LSTMAutoencoder(LSTMAutoencoderConfig(n_channels=n_features, **params), feature_names)


make_lstm_autoencoder.consumes = "windows"  # type: ignore[attr-defined]
make_lstm_autoencoder.check_params = {"window": 6, "hidden": 8, "latent": 4}  # type: ignore[attr-defined]
register("lstm_autoencoder")(make_lstm_autoencoder)
