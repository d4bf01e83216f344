"""Federated averaging of detector states (the maths; pipeline.model_sync carries the states over Kafka).

Float tensors are averaged weighted by the events each model has seen (FedAvg); running moments
(`mean`/`var` pairs, as in the online standardiser, or BatchNorm's `running_mean`/`running_var`) are
pooled exactly, between-model spread included. Integer tensors, counters and the optimizer state
stay the worker's own.

>>> import torch
>>> a = {"net": {"w": torch.tensor([0.0, 2.0])}, "n_steps": 5}
>>> b = {"net": {"w": torch.tensor([4.0, 6.0])}, "n_steps": 9}
>>> merge_states(a, 1, [(b, 3)])["net"]["w"].tolist(), merge_states(a, 1, [(b, 3)])["n_steps"]
([3.0, 5.0], 5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from stream_models.errors import ModelError

MOMENT_PAIRS = (("mean", "var"), ("running_mean", "running_var"))


class IncompatibleModels(ModelError):
    """Two model states do not share one architecture (keys, shapes, dtypes)."""




def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _same_structure(a: Any, b: Any, where: str) -> None:
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping) or set(a) != set(b):
            raise IncompatibleModels(f"{where}: keys differ")
        for key in a:
            _same_structure(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            raise IncompatibleModels(f"{where}: tensor {tuple(a.shape)}/{a.dtype} vs {getattr(b, 'shape', type(b))}")


def check_compatible(own: Mapping[str, Any], peer: Mapping[str, Any], exclude: Sequence[str] = ()) -> None:
    """Raise IncompatibleModels unless `peer` has the same architecture as `own` (keys, shapes, dtypes)."""
    for key in ("kind", "feature_names"):
        if own.get(key) != peer.get(key):
            raise IncompatibleModels(f"{key} differs: {own.get(key)!r} vs {peer.get(key)!r}")
    for key in own:
        if key not in exclude:
            _same_structure(own[key], peer.get(key), key)


def _merge(values: list[Any], weights: torch.Tensor) -> Any:
    own = values[0]
    if isinstance(own, Mapping):
        out = {key: _merge([v[key] for v in values], weights) for key in own}
        for mean_key, var_key in MOMENT_PAIRS:
            if _is_float(own.get(mean_key)) and _is_float(own.get(var_key)):
                out[mean_key], out[var_key] = _pool_moments(
                    [v[mean_key] for v in values], [v[var_key] for v in values], weights)
        return type(own)(out) if not isinstance(own, dict) else out
    if _is_float(own):
        stacked = torch.stack([v.to(torch.float64) for v in values])  # (K, ...)
        w = weights.reshape(-1, *([1] * own.dim()))
        return (stacked * w).sum(0).to(own.dtype)
    return own


def _pool_moments(means: list[torch.Tensor], variances: list[torch.Tensor],
                  weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the union of the models' data (within + between model variance)."""
    m = torch.stack([x.to(torch.float64) for x in means])  # (K, F)
    v = torch.stack([x.to(torch.float64) for x in variances])  # (K, F)
    w = weights.reshape(-1, *([1] * (m.dim() - 1)))
    mean = (w * m).sum(0)
    var = (w * (v + (m - mean) ** 2)).sum(0)
    return mean.to(means[0].dtype), var.to(variances[0].dtype)


def merge_states(own: Mapping[str, Any], own_events: int, peers: Sequence[tuple[Mapping[str, Any], int]],
                 exclude: Sequence[str] = ("optimizer",)) -> dict[str, Any]:
    """FedAvg of `own` with `peers` [(state, events seen)], weighted by events; `exclude` keys stay own.

    With no events seen anywhere, every model weighs the same.
    """
    counts = [max(0, int(own_events)), *[max(0, int(n)) for _, n in peers]]
    total = float(sum(counts))
    weights = torch.tensor([c / total for c in counts] if total else [1.0 / len(counts)] * len(counts),
                           dtype=torch.float64)
    merged: dict[str, Any] = {}
    for key, value in own.items():
        if key in exclude:
            merged[key] = value
        else:
            merged[key] = _merge([value, *[state[key] for state, _ in peers]], weights)
    return merged


def all_finite(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    if _is_float(value):
        return bool(torch.isfinite(value).all())
    return True
