"""The registry of detectors, so settings and tests can build any of them by name.

A detector module registers its class (or factory function) with `@register("name")`. The
factory is called as `factory(n_features=F, feature_names=[...], **params)` and must accept `seed`
and `device` keywords. It declares, as attributes (what the stream engine reads to feed it):

- `consumes`: "rows" (X is (B, F): one feature row per event), "windows" (X is (B, W, C): a device's
  last W readings of C channels; the built detector's `window` attribute = W) or "sequences"
  (X is (B, T, F): a card's last T feature rows). Default "rows".
- `learns_from_labels`: True when the detector learns from (delayed) labels; False when it learns
  from what its threshold calls normal. Default False.
- `check_params` (optional): small parameters that make it fast and quick to warm up in the
  generic check suite (`stream_models.checks`), e.g. a short window or few hidden units.

Modules are imported lazily by name (`_MODULES`), so importing the catalog stays cheap.
Helpers adding a detector module: append its dotted name to `_MODULES`.

Detectors from outside the package (stream_models.plugins) work wherever a name does: `pkg.mod:Class`,
`path/file.py:Class`, or a name an installed distribution registers in the `streamwarden.detectors`
entry-point group. Each is checked with the generic check suite when first loaded.

>>> make("halfspace_trees", n_features=3, seed=1).feature_names
['f0', 'f1', 'f2']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from stream_models.base import Detector
from stream_models.errors import ModelError

_MODULES: tuple[str, ...] = (
    "stream_models.halfspace_trees",
    "stream_models.dense_autoencoder",
    "stream_models.mlp_classifier",
    "stream_models.lstm_classifier",
    "stream_models.fraud_detector",
    "stream_models.lstm_autoencoder",
    "stream_models.lstm_forecaster",
    "stream_models.sensor_autoencoder",
)

DETECTORS: dict[str, Callable[..., Detector]] = {}
_loaded = False  # load_all() has run
CONSUMES = ("rows", "windows", "sequences")

F = TypeVar("F", bound=Callable[..., Any])


def register(name: str) -> Callable[[F], F]:
    """Class/function decorator adding a detector factory to `DETECTORS` under `name`."""

    def decorator(factory: F) -> F:
        existing = DETECTORS.get(name)
        if existing is not None and existing is not factory and _qualname(existing) != _qualname(factory):
            raise ModelError(f"detector name {name!r} is already registered by {_qualname(existing)}")
        kind = getattr(factory, "consumes", "rows")
        if kind not in CONSUMES:
            raise ModelError(f"{_qualname(factory)}.consumes must be one of {CONSUMES}, got {kind!r}")
        DETECTORS[name] = factory
        return factory

    return decorator


def load_all() -> dict[str, Callable[..., Detector]]:
    """Import every detector module that is present, and the installed plug-ins; returns `DETECTORS`."""
    global _loaded
    if _loaded:  # the engine asks per chunk: scanning the installed distributions again costs ~30 ms
        return DETECTORS
    from stream_models import plugins

    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but one of *its* imports is missing
                raise
    for name, load in plugins.entry_point_factories().items():
        if name not in DETECTORS:
            DETECTORS[name] = load()
    _loaded = True
    return DETECTORS


def names() -> list[str]:
    """Sorted names of all available detectors."""
    return sorted(load_all())


def factory(name: str) -> Callable[..., Detector]:
    """The factory of detector `name` (a registered name, or a plug-in `module:Class` / `file.py:Class`)."""
    from stream_models import plugins

    if plugins.is_spec(name):
        if name not in DETECTORS:
            DETECTORS[name] = plugins.load_spec(name)
        return DETECTORS[name]
    load_all()
    try:
        return DETECTORS[name]
    except KeyError:
        raise ModelError(f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}") from None


def consumes(name: str) -> str:
    """What detector `name` is fed: "rows", "windows" or "sequences" (see the module docstring)."""
    return str(getattr(factory(name), "consumes", "rows"))


def learns_from_labels(name: str) -> bool:
    """Whether detector `name` learns from (delayed) labels rather than from unflagged events."""
    return bool(getattr(factory(name), "learns_from_labels", False))


def make(name: str, n_features: int, **params: Any) -> Detector:
    """Build detector `name` for `n_features` features (channels, for windowed detectors)."""
    return factory(name)(n_features=n_features, **params)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
