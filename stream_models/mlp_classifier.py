"""Online supervised MLP fraud classifier (score = fraud probability), plus the small shared base of
the tabular torch detectors (online input standardisation, batched scoring, state dicts).

>>> import numpy as np
>>> det = MLPClassifier(["a", "b"], MLPClassifierConfig(hidden=(8,), seed=1))
>>> X = np.array([[0.0, 1.0], [5.0, 0.0]], np.float32)
>>> det.learn_many(X, np.array([0, 1]))
>>> det.score_many(X).shape
(2,)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stream_models.base import as_row, top_features
from stream_models.catalog import register
from stream_models.device import GLOBAL_RNG_LOCK, SeededDropout, pick_device
from stream_models.errors import ModelError


def resolve_feature_names(feature_names: Sequence[str] | None, n_features: int | None) -> list[str]:
    """`feature_names`, or f0..f{n-1} when only `n_features` is given (the catalog's way)."""
    if feature_names is None:
        if not n_features or n_features < 1:
            raise ModelError("give feature_names or n_features >= 1")
        return [f"f{i}" for i in range(n_features)]
    names = list(feature_names)
    if n_features is not None and n_features != len(names):
        raise ModelError(f"n_features={n_features} but {len(names)} feature_names")
    if len(set(names)) != len(names):
        raise ModelError("feature_names must be unique")
    return names


class OnlineStandardizer(nn.Module):
    """Running per-feature mean/variance (Chan's merge; the count is capped so it keeps adapting)."""

    def __init__(self, n_features: int, memory: int = 500_000, clip: float = 10.0) -> None:
        super().__init__()
        self.memory, self.clip = memory, clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("var", torch.ones(n_features, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)  # (N, F)
        n = float(x.shape[0])
        if n == 0:
            return
        m, v = x.mean(0), x.var(0, unbiased=False)
        c = float(self.count)
        tot = c + n
        delta = m - self.mean
        var = (self.var * c + v * n + delta**2 * c * n / tot) / tot if c else v
        self.mean.add_(delta * n / tot)
        self.var.copy_(var)
        self.count.fill_(min(tot, float(self.memory)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + 1e-6)
        return z.clamp(-self.clip, self.clip)


@dataclass(frozen=True)
class TabularModelConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str | None = None  # None: cuda when available
    scaler_memory: int = 500_000
    ema_decay: float = 0.0  # > 0: score with an exponential moving average of the weights
    input_clip: float = 10.0  # standardised inputs are clipped to +-this (keep it large for sparse features)


class TorchTabularDetector:
    """Shared plumbing: subclasses give `_build`, `_loss(z, y)`, `_score(z, net)`, optionally `_contributions(z)`."""

    config: TabularModelConfig

    consumes = "rows"
    learns_from_labels = False

    def __init__(self, feature_names: Sequence[str] | None, config: TabularModelConfig,
                 n_features: int | None = None, **params: Any) -> None:
        self.feature_names = resolve_feature_names(feature_names, n_features)
        self.config = config = dataclasses.replace(config, **params) if params else config
        self.device = pick_device(config.device)
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = self._build().to(self.device)
        self.scaler = OnlineStandardizer(len(self.feature_names), config.scaler_memory, config.input_clip)
        self.scaler.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                          fused=self.device.type in ("cpu", "cuda"))  # one kernel per step
        self.ema_net = copy.deepcopy(self.net) if config.ema_decay > 0 else None
        if self.ema_net is not None:
            self.ema_net.requires_grad_(False)
        # Dropout layers, found once: ours draw from a numpy generator per step, a plug-in's own nn.Dropout from
        # torch's global generator
        dropouts = [m for m in self.net.modules() if isinstance(m, nn.Dropout) and m.p > 0]
        self._seeded_dropouts = [m for m in dropouts if isinstance(m, SeededDropout)]
        self._torch_dropout = len(dropouts) > len(self._seeded_dropouts)
        self.n_learned = 0
        self.n_steps = 0

    @property
    def scoring_net(self) -> nn.Module:
        return self.ema_net if self.ema_net is not None else self.net

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_net is None:
            return
        d = self.config.ema_decay
        for e, p in zip(self.ema_net.parameters(), self.net.parameters(), strict=True):
            e.lerp_(p, 1.0 - d)
        for e, b in zip(self.ema_net.buffers(), self.net.buffers(), strict=True):
            e.copy_(b)

    # subclass hooks -------------------------------------------------------------------------
    def _build(self) -> nn.Module:
        raise ModelError(f"{type(self).__name__} must define _build")

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise ModelError(f"{type(self).__name__} must define _loss")

    def _score(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        raise ModelError(f"{type(self).__name__} must define _score")

    def _contributions(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F) per-feature contributions; default: gradient x input of the score."""
        z = z.detach().requires_grad_(True)
        s = self._score(z, self.scoring_net).sum()
        (g,) = torch.autograd.grad(s, z)
        c = g * z
        return c.sum(1) if c.dim() == 3 else c  # (B, F)

    # protocol -------------------------------------------------------------------------------
    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        arr = np.asarray(X, dtype=np.float32)
        if arr.shape[-1] != len(self.feature_names):
            raise ModelError(f"expected {len(self.feature_names)} features, got shape {arr.shape}")
        return torch.as_tensor(np.ascontiguousarray(arr), device=self.device)

    @torch.no_grad()
    def score_many(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0, np.float64)
        self.scoring_net.eval()
        return self._score(self.scaler(self._tensor(X)), self.scoring_net).double().cpu().numpy()

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        """One optimisation step on the batch (`y` None: all genuine / normal)."""
        if len(X) == 0:
            return
        x = self._tensor(X)
        yt = torch.zeros(len(x), device=self.device) if y is None else \
            torch.as_tensor(np.asarray(y, np.float32).reshape(-1), device=self.device)
        self.scaler.update(x)
        self.net.train()
        # Dropout draws from a generator seeded by (seed, step): seeded clones learn identically.
        seed = self.config.seed * 1_000_003 + self.n_steps
        if self._seeded_dropouts:
            rng = np.random.Generator(np.random.SFC64(seed))  # SFC64: the fastest raw words numpy has
            for m in self._seeded_dropouts:
                m.rng = rng
        if self._torch_dropout:
            # A plug-in's own nn.Dropout draws from torch's generator: only the one in use is seeded
            # (torch.manual_seed costs ~200 us: it seeds every backend).
            with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.default_generator.manual_seed(seed)
                if self.device.type == "cuda":
                    torch.cuda.manual_seed(seed)
                self._step(x, yt)
        else:
            self._step(x, yt)
        self._update_ema()
        self.n_learned += len(x)
        self.n_steps += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = self._loss(self.scaler(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def score_one(self, x: Any) -> float:
        return float(self.score_many(as_row(x, self.feature_names))[0])

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(as_row(x, self.feature_names), None if y is None else np.asarray([y]))

    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        if len(X) == 0:
            return []
        self.scoring_net.eval()
        contrib = self._contributions(self.scaler(self._tensor(X))).detach().double().cpu().numpy()  # (B, F)
        return top_features(contrib, self.feature_names, k, by=np.abs(contrib))

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_learning_rate(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()}
        return {"kind": type(self).__name__, "config": cfg, "feature_names": list(self.feature_names),
                "net": self.net.state_dict(), "scaler": self.scaler.state_dict(),
                "optimizer": self.optimizer.state_dict(), "n_learned": self.n_learned,
                "n_steps": self.n_steps,
                "ema_net": None if self.ema_net is None else self.ema_net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != type(self).__name__ or list(state["feature_names"]) != self.feature_names:
            raise ModelError(f"state of {state.get('kind')} with other features cannot load into {type(self).__name__}")
        self.net.load_state_dict(state["net"])
        self.scaler.load_state_dict(state["scaler"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema_net is not None:
            self.ema_net.load_state_dict(state["ema_net"] if state.get("ema_net") is not None else state["net"])
        self.n_learned = int(state["n_learned"])
        self.n_steps = int(state["n_steps"])


@dataclass(frozen=True)
class MLPClassifierConfig(TabularModelConfig):
    hidden: tuple[int, ...] = (500,)
    dropout: float = 0.2
    pos_weight: float = 1.0  # weight of fraud examples in the loss (class imbalance)
    ema_decay: float = 0.99  # chosen on the Handbook's validation weeks (a selection run of an earlier session)
    input_clip: float = 100.0  # sparse features (terminal fraud runs) need room beyond +-10 sigma


@register("mlp_classifier")
class MLPClassifier(TorchTabularDetector):
    """Feed-forward fraud classifier on (B, F) features; learns one Adam step per `learn_many`.

    Built from `feature_names` (or `n_features`) and a config; keyword `params` override config fields.
    """

    learns_from_labels = True
    config: MLPClassifierConfig
    check_params: dict[str, Any] = {"hidden": (16,)}

    def __init__(self, feature_names: Sequence[str] | None = None, config: MLPClassifierConfig | None = None,
                 *, n_features: int | None = None, **params: Any) -> None:
        super().__init__(feature_names, config or MLPClassifierConfig(), n_features, **params)

    def _build(self) -> nn.Module:
        layers: list[nn.Module] = []
        d = len(self.feature_names)
        for h in self.config.hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), SeededDropout(self.config.dropout)]
            d = h
        layers.append(nn.Linear(d, 1))
        return nn.Sequential(*layers)

    def _logits(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        return (net or self.net)(z).squeeze(-1)  # (B,)

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pw = torch.tensor(self.config.pos_weight, device=z.device)
        return nn.functional.binary_cross_entropy_with_logits(self._logits(z), y, pos_weight=pw)

    def _score(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        return torch.sigmoid(self._logits(z, net).double())  # float64 keeps confident scores apart
