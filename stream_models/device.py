"""Pick the torch device: CUDA when available (or when asked), else CPU."""

from __future__ import annotations

import os

import torch


def pick_device(preferred: str | None = None) -> torch.device:
    """`preferred` (or env STREAMWARDEN_DEVICE) may be "cpu", "cuda", "cuda:1"; default: cuda if available."""
    name = preferred or os.environ.get("STREAMWARDEN_DEVICE") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available on this machine")
    return device
