"""Unsupervised dense autoencoder for tabular events: score = mean squared reconstruction error of
the standardised features; explanation = per-feature squared error.

>>> import numpy as np
>>> det = DenseAutoencoder(["a", "b", "c"], DenseAutoencoderConfig(hidden=(8, 2), seed=0))
>>> det.learn_many(np.ones((4, 3), np.float32))
>>> det.score_many(np.ones((2, 3), np.float32)).shape
(2,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stream_models.catalog import register
from stream_models.mlp_classifier import TabularModelConfig, TorchTabularDetector


@dataclass(frozen=True)
class DenseAutoencoderConfig(TabularModelConfig):
    hidden: tuple[int, ...] = (100, 20)  # encoder sizes; the decoder mirrors them (book: F-100-20-100-F)
    lr: float = 1e-3


@register("dense_autoencoder")
class DenseAutoencoder(TorchTabularDetector):
    """Autoencoder on (B, F); `learn_many` ignores labels (the learner feeds it normal events)."""

    config: DenseAutoencoderConfig
    check_params: dict[str, Any] = {"hidden": (8, 2)}

    def __init__(self, feature_names: Sequence[str] | None = None, config: DenseAutoencoderConfig | None = None,
                 *, n_features: int | None = None, **params: Any) -> None:
        super().__init__(feature_names, config or DenseAutoencoderConfig(), n_features, **params)

    def _build(self) -> nn.Module:
        sizes = [len(self.feature_names), *self.config.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        back = sizes[::-1]
        for i, (a, b) in enumerate(zip(back[:-1], back[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(back) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def _errors(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        return ((net or self.net)(z) - z) ** 2  # (B, F)

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._errors(z).mean()

    def _score(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        return self._errors(z, net).double().mean(1)  # (B,)

    def _contributions(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._errors(z, self.scoring_net)  # (B, F)
