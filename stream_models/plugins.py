"""Detectors from outside the package: a dotted path, a file path or an installed entry point, each checked
once at load time with the generic check suite (stream_models.checks), plus two small bases that make a
plug-in a few lines long.

Where a detector name may appear (a domain's `detector`, `challengers`, `params`), these also work:

- `mypkg.models:MyDetector` (a module importable from the current directory or the installed packages),
- `./my_detectors.py:MyDetector` (a file),
- a name registered by an installed distribution in the `streamwarden.detectors` entry-point group.

A plug-in is a class (or factory) called as `cls(n_features=F, feature_names=[...], seed=S, device=D, **params)`
that implements `stream_models.base.Detector` and declares `consumes` ("rows", "windows", "sequences") and
`learns_from_labels`, like the built-in detectors. `TorchRowDetector` and `RiverRowDetector` do all of that
but the model itself: see docs/plugins.md.

>>> from river import anomaly
>>> class Svm(RiverRowDetector):
...     def make_estimator(self):
...         return anomaly.OneClassSVM(nu=0.2)
>>> det = Svm(n_features=2, seed=0)
>>> det.learn_many(np.zeros((20, 2), np.float32))
>>> det.score_many(np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)).shape
(2,)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pickle
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stream_models.base import Detector, RunningMoments, as_row, top_features
from stream_models.errors import ModelError
from stream_models.mlp_classifier import TabularModelConfig, TorchTabularDetector, resolve_feature_names

ENTRY_POINT_GROUP = "streamwarden.detectors"
CHECK_FEATURES = 4  # features of the sample data a plug-in is checked with


def is_spec(name: str) -> bool:
    """Whether `name` points at a plug-in (`module:Attr` or `file.py:Attr`) rather than naming a detector."""
    return ":" in name


def load_spec(spec: str) -> Callable[..., Detector]:
    """The factory `spec` points at (`pkg.mod:Attr` or `path/file.py:Attr`), checked; a clear ModelError else."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ModelError(f"detector {spec!r}: write a plug-in as module:Class or path/to/file.py:Class")
    module = _import_file(module_name, spec) if module_name.endswith(".py") else _import_module(module_name, spec)
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ModelError(f"detector {spec!r}: {module_name} has no {attr!r}")
    if not callable(factory):
        raise ModelError(f"detector {spec!r}: {attr} is not a class or function")
    verify(spec, factory)
    return factory  # type: ignore[return-value]


def entry_point_factories() -> dict[str, Callable[[], Callable[..., Detector]]]:
    """name -> loader of each detector installed under the `streamwarden.detectors` entry-point group."""
    return {ep.name: functools.partial(_load_entry_point, ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(ep: Any) -> Callable[..., Detector]:
    try:
        factory = ep.load()
    except Exception as exc:
        raise ModelError(f"detector {ep.name!r} (entry point {ep.value}): cannot load: {exc}") from exc
    verify(ep.name, factory)
    return factory  # type: ignore[no-any-return]


def _import_module(module_name: str, spec: str) -> Any:
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # like `python -m`: a module beside the user's settings file imports
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"detector {spec!r}: cannot import {module_name}: {exc}") from exc


def _import_file(path_text: str, spec: str) -> Any:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"detector {spec!r}: no file {path}")
    name = f"streamwarden_plugin_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelError(f"detector {spec!r}: cannot load {path}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelError(f"detector {spec!r}: {path.name} failed to import: {exc}") from exc
    return module


def verify(name: str, factory: Callable[..., Detector]) -> None:
    """Run the generic check suite on `factory`; a ModelError naming the first failed check."""
    from stream_models import checks
    from stream_models.catalog import CONSUMES

    kind = getattr(factory, "consumes", "rows")
    if kind not in CONSUMES:
        raise ModelError(f"detector {name!r}: consumes must be one of {CONSUMES}, got {kind!r}")
    params = dict(getattr(factory, "check_params", {}))

    def build() -> Detector:
        return factory(n_features=CHECK_FEATURES, seed=0, **params)

    try:
        sample = build()
    except Exception as exc:
        raise ModelError(f"detector {name!r}: cannot be built as factory(n_features=4, seed=0): {exc}") from exc
    if not isinstance(sample, Detector):
        missing = [m for m in ("feature_names", "score_many", "learn_many", "score_one", "learn_one", "explain_many",
                               "state_dict", "load_state_dict") if not hasattr(sample, m)]
        raise ModelError(f"detector {name!r} does not implement the Detector protocol: missing {', '.join(missing)}")
    X, y = checks.sample_data(sample)
    for check in checks.yield_checks():
        try:
            check(build, X, y)
        except Exception as exc:
            what = check.__name__.removeprefix("check_").replace("_", " ")
            detail = " ".join(str(exc).split())  # one line: numpy's assertion messages span several
            raise ModelError(f"detector {name!r} failed the check '{what}': {detail[:300]}") from exc


class TorchRowDetector(TorchTabularDetector):
    """A torch module on one feature row per event. Give `build_module(n_features)`; the base standardises the
    inputs online, batches scoring on the picked device, trains with Adam, explains and checkpoints.

    `objective = "reconstruction"` (default): the module maps (B, F) to (B, F); score = mean squared
    reconstruction error; it learns from what the threshold calls normal.
    `objective = "classification"`: the module maps (B, F) to (B, 1) logits; score = probability; it learns from
    labels.
    """

    objective = "reconstruction"
    check_params: dict[str, Any] = {}

    def __init__(self, feature_names: Sequence[str] | None = None, *, n_features: int | None = None,
                 lr: float = 1e-3, **params: Any) -> None:
        super().__init__(feature_names, TabularModelConfig(lr=lr), n_features, **params)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.objective not in ("reconstruction", "classification"):
            raise ModelError(f"{cls.__name__}.objective must be 'reconstruction' or 'classification'")
        cls.learns_from_labels = cls.objective == "classification"

    def build_module(self, n_features: int) -> nn.Module:
        raise ModelError(f"{type(self).__name__} must define build_module(n_features)")

    def _build(self) -> nn.Module:
        return self.build_module(len(self.feature_names))

    def _out(self, z: torch.Tensor, net: nn.Module | None) -> torch.Tensor:
        out = (net or self.net)(z)
        if self.objective == "classification":
            return out.reshape(len(z))
        return (out - z) ** 2  # (B, F)

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.objective == "classification":
            return nn.functional.binary_cross_entropy_with_logits(self._out(z, None), y)
        return self._out(z, None).mean()

    def _score(self, z: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        out = self._out(z, net).double()
        return torch.sigmoid(out) if self.objective == "classification" else out.mean(1)

    def _contributions(self, z: torch.Tensor) -> torch.Tensor:
        if self.objective == "classification":
            return super()._contributions(z)
        with torch.no_grad():
            return self._out(z, self.scoring_net)  # per-feature squared error


class RiverRowDetector:
    """A River anomaly estimator (`river.anomaly`) on one feature row per event. Give `make_estimator()`.

    Scores are the estimator's `score_one` of the row as a {feature: value} dict; it learns, row by row, from what
    the threshold calls normal. Explanations: |x - running mean| / running std. Checkpoints hold the estimator
    pickled, so load only checkpoints your own workers wrote.
    """

    consumes = "rows"
    learns_from_labels = False
    check_params: dict[str, Any] = {}

    def __init__(self, feature_names: Sequence[str] | None = None, *, n_features: int | None = None,
                 seed: int | None = 0, device: str | None = None, **params: Any) -> None:
        self.feature_names = resolve_feature_names(feature_names, n_features)
        self.seed, self.params = seed, params
        self.estimator = self.make_estimator(**params)
        self.moments = RunningMoments(len(self.feature_names))

    def make_estimator(self, **params: Any) -> Any:
        raise ModelError(f"{type(self).__name__} must define make_estimator()")

    def _rows(self, X: np.ndarray) -> list[dict[str, float]]:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise ModelError(f"expected (B, {len(self.feature_names)}) rows, got shape {arr.shape}")
        return [dict(zip(self.feature_names, row, strict=True)) for row in arr.tolist()]

    def score_many(self, X: np.ndarray) -> np.ndarray:
        score = self.estimator.score_one
        rows = self._rows(X)
        return np.fromiter((score(r) for r in rows), dtype=np.float64, count=len(rows))

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None:
        for row in self._rows(X):
            self.estimator.learn_one(row)
        self.moments.update(np.asarray(X, dtype=np.float64))

    def score_one(self, x: Any) -> float:
        return float(self.score_many(as_row(x, self.feature_names))[0])

    def learn_one(self, x: Any, y: int | None = None) -> None:
        self.learn_many(as_row(x, self.feature_names))

    def explain_many(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        return top_features(self.moments.z(np.asarray(X, dtype=np.float64)), self.feature_names,
                            min(k, len(self.feature_names)))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "feature_names": list(self.feature_names),
                "estimator": pickle.dumps(self.estimator), "moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != type(self).__name__ or list(state["feature_names"]) != self.feature_names:
            raise ModelError(f"state of {state.get('kind')} with other features cannot load into {type(self).__name__}")
        self.estimator = pickle.loads(state["estimator"])  # noqa: S301 (the worker's own checkpoint)
        self.moments.load_state_dict(state["moments"])
