"""Concept-drift monitoring of a score or error stream (River's ADWIN, optionally Page-Hinkley).

The monitor only reports: `update_many(values)` returns the `DriftEvent`s of the batch, and
`actions` says what the caller should do about them (boost the learning rate for a while,
reset the alert threshold); the learner and the runner apply them.

State: ADWIN lives in River's Rust extension; its own compact serialisation (the bytes behind
River's pickling support) is stored as a uint8 array, so a restored monitor is exact and the
checkpoint stays `weights_only`-loadable. Should those bytes not load (another River build),
the monitor is rebuilt by replaying the last `replay_window` values, which are stored too.
Page-Hinkley's state is a handful of numbers and is stored as such.

>>> import numpy as np
>>> monitor = DriftMonitor(reset_threshold=True)
>>> values = np.r_[np.random.default_rng(0).normal(0, 1, 2000), np.random.default_rng(1).normal(3, 1, 500)]
>>> [(e.detector, e.position > 2000) for e in monitor.update_many(values)]
[('adwin', True)]
>>> monitor.actions.reset_threshold
True
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import river
from river import drift, stats

from stream_models.errors import ModelError


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A drift detected at `values[index]` of a batch (`position` = 0-based index in the whole stream)."""

    index: int
    detector: str
    value: float
    position: int


@dataclass(frozen=True, slots=True)
class DriftActions:
    """What the caller should do when drift is reported.

    lr_boost_factor: multiply the learning rate by this for the next `lr_boost_events` events.
    reset_threshold: call `threshold.reset(...)` so it re-learns the new score distribution.
    """

    lr_boost_factor: float = 1.0
    lr_boost_events: int = 0
    reset_threshold: bool = False


@dataclass(frozen=True, slots=True)
class DriftConfig:
    adwin_delta: float = 0.002
    adwin_clock: int = 32
    adwin_grace_period: int = 10
    page_hinkley: bool = False
    ph_min_instances: int = 30
    ph_delta: float = 0.005
    ph_threshold: float = 50.0
    ph_alpha: float = 1 - 1e-4
    ph_mode: str = "both"
    replay_window: int = 5000


class DriftMonitor:
    """Watches one numeric stream (e.g. per-event reconstruction error) for changes in its mean.

    Parameters
    ----------
    adwin_delta
        ADWIN confidence; smaller = fewer, surer detections.
    page_hinkley
        Also run Page-Hinkley (better at slow, monotone shifts). Its `ph_delta` (tolerated change)
        must suit the noise of the stream: River's default 0.005 raises false alarms on a
        unit-variance stream within a few thousand values; ~0.1 x the standard deviation does not.
    lr_boost_factor, lr_boost_events, reset_threshold
        The actions reported in `actions` (see `DriftActions`).
    replay_window
        Recent values kept in the state, used only if ADWIN's own bytes cannot be restored.
    **options
        Further `DriftConfig` fields (ADWIN clock, Page-Hinkley delta/threshold/alpha/mode...).
    """

    def __init__(
        self,
        adwin_delta: float = 0.002,
        *,
        page_hinkley: bool = False,
        lr_boost_factor: float = 1.0,
        lr_boost_events: int = 0,
        reset_threshold: bool = False,
        replay_window: int = 5000,
        **options: Any,
    ) -> None:
        try:
            self.config = DriftConfig(
                adwin_delta=adwin_delta, page_hinkley=page_hinkley, replay_window=replay_window, **options
            )
        except TypeError as exc:
            raise ModelError(f"unknown DriftMonitor option: {exc}") from exc
        if lr_boost_factor <= 0 or lr_boost_events < 0:
            raise ModelError("lr_boost_factor must be > 0 and lr_boost_events >= 0")
        self.actions = DriftActions(float(lr_boost_factor), int(lr_boost_events), bool(reset_threshold))
        self.reset()

    def reset(self) -> None:
        c = self.config
        self._adwin = drift.ADWIN(delta=c.adwin_delta, clock=c.adwin_clock, grace_period=c.adwin_grace_period)
        self._ph = (
            drift.PageHinkley(
                min_instances=c.ph_min_instances,
                delta=c.ph_delta,
                threshold=c.ph_threshold,
                alpha=c.ph_alpha,
                mode=c.ph_mode,
            )
            if c.page_hinkley
            else None
        )
        self._recent: deque[float] = deque(maxlen=c.replay_window)
        self.position = 0  # values seen so far
        self.n_detections = 0

    @property
    def estimation(self) -> float:
        """ADWIN's current estimate of the stream mean."""
        return float(self._adwin.estimation)

    def update_many(self, values: np.ndarray) -> list[DriftEvent]:
        """Feed a batch (non-finite values are skipped); returns the drifts it triggered, in order."""
        events: list[DriftEvent] = []
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        for i, value in enumerate(values.tolist()):
            if not math.isfinite(value):
                continue
            self._adwin.update(value)
            if self._adwin.drift_detected:
                events.append(DriftEvent(i, "adwin", value, self.position))
            if self._ph is not None:
                self._ph.update(value)
                if self._ph.drift_detected:
                    events.append(DriftEvent(i, "page_hinkley", value, self.position))
            self._recent.append(value)
            self.position += 1
        self.n_detections += len(events)
        return events

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "config": asdict(self.config),
            "actions": asdict(self.actions),
            "position": self.position,
            "n_detections": self.n_detections,
            "recent": np.asarray(self._recent, dtype=np.float64),
            "adwin_bytes": self._adwin_bytes(),
            "adwin_drift": bool(self._adwin.drift_detected),
            "river_version": river.__version__,
        }
        if self._ph is not None:
            ph = self._ph
            state["page_hinkley"] = {
                "n": float(ph._x_mean.n),
                "mean": float(ph._x_mean.get()),
                "sum_increase": float(ph._sum_increase),
                "sum_decrease": float(ph._sum_decrease),
                "min_increase": float(ph._min_increase),
                "max_decrease": float(ph._max_decrease),
                "drift": bool(ph.drift_detected),
            }
        return state

    def _adwin_bytes(self) -> np.ndarray:
        """ADWIN's own serialised state as uint8 (empty if this River build offers none)."""
        raw = self._adwin._helper.__getstate__()
        return np.frombuffer(raw, dtype=np.uint8).copy() if isinstance(raw, bytes) else np.empty(0, np.uint8)

    def _restore_adwin(self, state: dict[str, Any]) -> bool:
        if state.get("river_version") != river.__version__ or not len(state["adwin_bytes"]):
            return False
        try:
            self._adwin._helper.__setstate__(np.asarray(state["adwin_bytes"], dtype=np.uint8).tobytes())
        except BaseException as exc:  # pyo3 turns a Rust panic on bad bytes into a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return False
        self._adwin._drift_detected = bool(state["adwin_drift"])
        return True

    def load_state_dict(self, state: dict[str, Any]) -> None:
        config = DriftConfig(**state["config"])
        actions = DriftActions(**state["actions"])
        self.config, self.actions = config, actions
        self.reset()
        recent = np.asarray(state["recent"], dtype=np.float64)
        if not self._restore_adwin(state):  # another River build: rebuild from the recent values
            self._adwin = drift.ADWIN(
                delta=config.adwin_delta, clock=config.adwin_clock, grace_period=config.adwin_grace_period
            )
            for value in recent.tolist():
                self._adwin.update(value)
        if self._ph is not None and "page_hinkley" in state:
            ph, saved = self._ph, state["page_hinkley"]
            mean = stats.Mean()
            mean.n, mean._mean = saved["n"], saved["mean"]
            ph._x_mean = mean
            ph._sum_increase, ph._sum_decrease = saved["sum_increase"], saved["sum_decrease"]
            ph._min_increase, ph._max_decrease = saved["min_increase"], saved["max_decrease"]
            ph._drift_detected = saved["drift"]
        self._recent.extend(recent.tolist())
        self.position = int(state["position"])
        self.n_detections = int(state["n_detections"])
