"""Dense window autoencoder: flattens a window of W readings x C channels and reconstructs it.

Score = mean squared reconstruction error (optionally of the last steps only);
explanation = per-channel error.

>>> import numpy as np
>>> det = WindowAutoencoder(WindowAutoencoderConfig(window=4, n_channels=2))
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
class WindowAutoencoderConfig(WindowModelConfig):
    hidden: int = 64
    latent: int = 8
    dropout: float = 0.0


class _DenseAE(nn.Module):
    def __init__(self, cfg: WindowAutoencoderConfig) -> None:
        super().__init__()
        d = cfg.window * cfg.n_channels
        self.encoder = nn.Sequential(
            nn.Linear(d, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.latent)
        )
        self.decoder = nn.Sequential(nn.Linear(cfg.latent, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, W, C = x.shape
        z = self.encoder(x.reshape(B, W * C))  # (B, latent)
        return self.decoder(z).reshape(B, W, C)  # (B, W, C)


class WindowAutoencoder(TorchWindowDetector):
    """Dense autoencoder over (B, W, C) windows."""

    config: WindowAutoencoderConfig

    def __init__(
        self, config: WindowAutoencoderConfig | None = None, channels: Sequence[str] | None = None
    ) -> None:
        super().__init__(config or WindowAutoencoderConfig(), channels)

    def _build(self) -> nn.Module:
        return _DenseAE(self.config)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x  # (B, W, C) each


def make_window_autoencoder(
    n_features: int, feature_names: Sequence[str] | None = None, **params: Any
) -> WindowAutoencoder:
    """Catalog factory: `WindowAutoencoderConfig` fields as keyword arguments (window, hidden, seed, ...)."""
    return WindowAutoencoder(WindowAutoencoderConfig(n_channels=n_features, **params), feature_names)


make_window_autoencoder.consumes = "windows"  # type: ignore[attr-defined]
make_window_autoencoder.check_params = {"window": 6, "hidden": 8, "latent": 2}  # type: ignore[attr-defined]
register("window_autoencoder")(make_window_autoencoder)
