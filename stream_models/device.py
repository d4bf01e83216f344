"""Pick the torch device: CUDA when available (or when asked), else CPU."""

from __future__ import annotations

import os
import threading

import torch

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
