"""Pick the torch device: CUDA when available (or when asked), else CPU."""

from __future__ import annotations

import os
import threading

import numpy as np
import torch
from torch import nn

# Held while code seeds or draws from torch's global generator (model construction, dropout in training): a model
# training in a background thread (stream_models.learner) and one built on the scoring thread then never interleave
# their draws, so seeded runs stay deterministic.
GLOBAL_RNG_LOCK = threading.RLock()


def pick_device(preferred: str | None = None) -> torch.device:
    """`preferred` (or env STREAMWARDEN_DEVICE) may be "cpu", "cuda", "cuda:1"; default: cuda if available."""
    name = preferred or os.environ.get("STREAMWARDEN_DEVICE") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available on this machine")
    return device


def set_torch_threads(n: int) -> None:
    """CPU threads torch may use in this process (0 keeps torch's default of one per core).

    One worker per core wants 1: more threads oversubscribe the cores when workers share a machine."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class SeededDropout(nn.Dropout):
    """nn.Dropout whose training masks come from the numpy generator a detector hands it for one step (`rng`): a
    seeded clone draws the same masks without locking torch's global generator. Each element is kept when a 16-bit
    word of the generator's raw output is at least p x 65,536 (p rounded to 1/65,536): about three times faster than
    numpy's float draws, which were five times faster than torch's CPU Bernoulli. Without `rng` it is plain
    nn.Dropout."""

    rng: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.rng is None:
            return super().forward(x)
        n = x.numel()
        words = self.rng.bit_generator.random_raw(-(-n // 4)).view(np.uint16)[:n].reshape(tuple(x.shape))
        keep = (words >= np.uint16(min(round(self.p * 65_536), 65_535))) * np.float32(1.0 / (1.0 - self.p))
        return x * torch.from_numpy(keep).to(x.device)
