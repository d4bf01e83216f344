"""Online learning off the scoring hot path: a replay buffer, an update cadence, delayed labels and
a learning-rate policy with a drift-triggered boost.

The runner scores a batch, then calls `observe(X, flags, ...)` and `maybe_update()`:
- supervised mode: every event waits until its label is known; a transaction without a fraud label
  counts as genuine once `label_delay_s` has passed. Matured events enter the replay buffer (frauds
  also a fraud buffer, so minibatches can be class-balanced).
- unsupervised mode: events the threshold judged normal enter the replay buffer at once (as
  normal); flagged events wait for the label delay and are learned only if no fraud label came.
Every `update_every_events` events (or `update_every_ms` of wall time), `steps_per_update`
minibatches are drawn from the replay buffer and passed to `detector.learn_many`.

With `background=True` (torch detectors) the steps run on a learning thread, on a copy of the detector (torch
releases the interpreter lock in its kernels, so a second core does the learning while the first scores). The
copy's weights reach the scoring detector at the next update, just before the copy takes its next steps: after
update k, scores use the weights of update k - 1 (one update behind learning inline), whatever the timing, so a
stream scores the same live and in a backtest; `state_dict` waits for the steps in flight and holds the copy too.

>>> import numpy as np
>>> from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig
>>> det = MLPClassifier(["a"], MLPClassifierConfig(hidden=(4,)))
>>> ol = OnlineLearner(det, OnlineLearnerConfig(label_delay_s=10, update_every_events=2, batch_size=2))
>>> ol.observe(np.zeros((2, 1), np.float32), event_ids=["1", "2"], ts=np.array([0.0, 1.0]))
>>> ol.maybe_update(now_ts=5.0), ol.maybe_update(now_ts=20.0)
(0, 8)
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch

from stream_models.errors import ModelError


class _Learnable(Protocol):
    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> None: ...


@dataclass(frozen=True)
class OnlineLearnerConfig:
    supervised: bool = True
    label_delay_s: float = 7 * 86_400.0
    update_every_events: int = 2048
    update_every_ms: float | None = None  # also update when this much wall time has passed
    steps_per_update: int = 8
    batch_size: int = 256
    replay_capacity: int = 100_000  # most recent matured events kept for replay
    positive_capacity: int = 20_000  # most recent frauds kept for balanced minibatches
    positive_fraction: float = 0.0  # share of each minibatch drawn from the fraud buffer
    lr_boost_factor: float = 3.0
    lr_boost_events: int = 50_000  # learned events over which a boost decays back to the base lr
    seed: int = 0
    background: bool = False  # learn on a copy in a learning thread (torch detectors; see the module doc)

    def __post_init__(self) -> None:
        if self.update_every_events < 1 or self.steps_per_update < 0 or self.batch_size < 1:
            raise ModelError("update_every_events and batch_size must be >= 1, steps_per_update >= 0")
        if not 0.0 <= self.positive_fraction < 1.0:
            raise ModelError("positive_fraction must be in [0, 1)")
        if self.replay_capacity < 1 or self.positive_capacity < 1:
            raise ModelError("replay_capacity and positive_capacity must be >= 1")


class _Ring:
    """Fixed-capacity ring of (x, y) rows; arrays are allocated on the first insert."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.X: np.ndarray | None = None
        self.y = np.zeros(capacity, np.float32)
        self.n = 0  # rows ever added

    def __len__(self) -> int:
        return min(self.n, self.capacity)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        if len(X) == 0:
            return
        if self.X is None:
            self.X = np.zeros((self.capacity, *X.shape[1:]), np.float32)
        X, y = X[-self.capacity:], y[-self.capacity:]
        pos = (self.n + np.arange(len(X))) % self.capacity
        self.X[pos] = X
        self.y[pos] = y
        self.n += len(X)

    def sample(self, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self), size=k)
        assert self.X is not None
        return self.X[idx], self.y[idx]

    def state(self) -> dict[str, Any]:
        n = len(self)
        X = np.zeros((0,), np.float32) if self.X is None else self.X[:n]
        return {"capacity": self.capacity, "n": self.n, "X": torch.from_numpy(X.copy()),
                "y": torch.from_numpy(self.y[:n].copy())}

    def load(self, s: dict[str, Any]) -> None:
        self.__init__(int(s["capacity"]))  # type: ignore[misc]
        n = len(s["y"])
        if n:
            self.X = np.zeros((self.capacity, *s["X"].shape[1:]), np.float32)
            self.X[:n] = s["X"].numpy()
            self.y[:n] = s["y"].numpy()
        self.n = int(s["n"])


_LEARNING_THREAD: ThreadPoolExecutor | None = None
_LAST_SUBMITTED: Future[None] | None = None  # one thread, first in first out: when this is done, all are


def learning_in_flight() -> bool:
    """Whether the learning thread has steps queued or running."""
    return _LAST_SUBMITTED is not None and not _LAST_SUBMITTED.done()


def wait_for_learning() -> None:
    """Block until the learning thread is idle (errors stay with the learners, which re-raise them)."""
    from concurrent.futures import wait

    if _LAST_SUBMITTED is not None:
        wait([_LAST_SUBMITTED])


def _submit_learning(fn: Any, *args: Any) -> Future[None]:
    """Queue steps on the process's one learning thread: the learners' steps run one after another beside the
    scoring thread."""
    global _LEARNING_THREAD, _LAST_SUBMITTED
    if _LEARNING_THREAD is None:
        _LEARNING_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamwarden-learner")
    _LAST_SUBMITTED = _LEARNING_THREAD.submit(fn, *args)
    return _LAST_SUBMITTED


def _trains_in_background(detector: Any) -> bool:
    return isinstance(getattr(detector, "net", None), torch.nn.Module)


class OnlineLearner:
    """Feeds a detector from the stream: `observe`, `observe_labels`, `maybe_update`, `boost_lr`."""

    def __init__(self, detector: _Learnable, config: OnlineLearnerConfig | None = None) -> None:
        self.detector = detector
        self.config = config or OnlineLearnerConfig()
        # the copy that learns in the background, and its steps in flight
        self._shadow: Any = copy.deepcopy(detector) if self.config.background and _trains_in_background(detector) \
            else None
        self._in_flight: Future[None] | None = None
        self.rng = np.random.default_rng(self.config.seed)
        self.replay = _Ring(self.config.replay_capacity)
        self.frauds = _Ring(self.config.positive_capacity)
        self._pending: deque[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = deque()
        self._labels: dict[str, int] = {}
        self._since_update = 0
        self._last_update_wall = time.monotonic()
        self._now = -np.inf
        self._auto_id = 0
        self.base_lr = float(getattr(detector, "learning_rate", 0.0))
        self._boost_left = 0
        self.updates = 0

    # ---- intake ------------------------------------------------------------------------------
    def observe(self, X: np.ndarray, flags: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                event_ids: Sequence[str] | None = None, ts: np.ndarray | None = None) -> None:
        """Take a scored batch (features, threshold flags, labels if known: 1 fraud / 0 genuine / -1 unknown)."""
        B = len(X)
        if B == 0:
            return
        X = np.asarray(X, np.float32)
        flags = np.zeros(B, bool) if flags is None else np.asarray(flags, bool)
        t = np.full(B, time.time()) if ts is None else np.asarray(ts, np.float64)
        if event_ids is None:
            event_ids = [f"_auto{self._auto_id + i}" for i in range(B)]
            self._auto_id += B
        ids = [str(i) for i in event_ids]
        if labels is not None:
            lab = np.asarray(labels).reshape(-1)
            self._labels.update((ids[i], int(lab[i])) for i in np.nonzero(lab >= 0)[0])
        self._now = max(self._now, float(t.max()))
        self._since_update += B
        if not self.config.supervised:  # normal-by-threshold events are learned at once
            known = np.fromiter((self._labels.get(i, -1) for i in ids), np.int64, B)
            now_ok = (~flags & (known != 1)) | (known == 0)
            self.replay.add(X[now_ok], np.zeros(int(now_ok.sum()), np.float32))
            wait = ~now_ok
            X, t, flags = X[wait], t[wait], flags[wait]
            ids = [i for i, w in zip(ids, wait, strict=True) if w]
        if len(ids):
            self._pending.append((ids, X, t, flags))
        self._bound_labels()

    def observe_labels(self, event_ids: Sequence[str], labels: Sequence[int] | np.ndarray) -> None:
        """Delayed labels (chargebacks): 1 = fraud, 0 = confirmed genuine."""
        self._labels.update(zip((str(i) for i in event_ids), (int(v) for v in np.asarray(labels).reshape(-1)),
                                strict=True))
        self._bound_labels()

    def _bound_labels(self) -> None:
        """Forget the oldest labels that never matched a waiting event."""
        extra = len(self._labels) - 10 * self.config.replay_capacity
        if extra > 0:
            for key in list(self._labels)[:extra]:
                del self._labels[key]

    def _mature(self, now: float) -> None:
        cutoff = now - self.config.label_delay_s
        while self._pending:
            ids, X, t, flags = self._pending[0]
            ripe = t <= cutoff
            if not ripe.any():
                break
            ripe_ids = [i for i, r in zip(ids, ripe, strict=True) if r]
            y = np.fromiter((self._labels.pop(i, 0) for i in ripe_ids), np.int64, len(ripe_ids))
            Xr = X[ripe]
            if self.config.supervised:
                self.replay.add(Xr, y.astype(np.float32))
                self.frauds.add(Xr[y == 1], np.ones(int((y == 1).sum()), np.float32))
            else:
                keep = y == 0
                self.replay.add(Xr[keep], np.zeros(int(keep.sum()), np.float32))
            self._pending.popleft()
            if not ripe.all():
                rest = ~ripe
                self._pending.appendleft(([i for i, r in zip(ids, rest, strict=True) if r], X[rest], t[rest],
                                          flags[rest]))
                break

    # ---- updates -----------------------------------------------------------------------------
    def maybe_update(self, now_ts: float | None = None) -> int:
        """Mature events whose label delay has passed and, when due, learn; returns the steps taken."""
        now = self._now if now_ts is None else float(now_ts)
        self._mature(now)
        cfg = self.config
        wall_due = cfg.update_every_ms is not None and \
            (time.monotonic() - self._last_update_wall) * 1000.0 >= cfg.update_every_ms
        if (self._since_update < cfg.update_every_events and not wall_due) or len(self.replay) == 0:
            return 0
        self._since_update = 0 if wall_due else self._since_update % cfg.update_every_events
        self._last_update_wall = time.monotonic()
        n_pos = int(round(cfg.batch_size * cfg.positive_fraction)) if len(self.frauds) else 0
        batches = []
        for _ in range(cfg.steps_per_update):
            X, y = self.replay.sample(self.rng, cfg.batch_size - n_pos)
            if n_pos:
                Xp, yp = self.frauds.sample(self.rng, n_pos)
                X, y = np.concatenate([X, Xp]), np.concatenate([y, yp])
            batches.append((X, y if cfg.supervised else None))
        if self._shadow is not None:
            self.publish()  # the previous update's weights start scoring now
            self._apply_lr(self._shadow)
            self._in_flight = _submit_learning(self._learn, self._shadow, batches)
        else:
            self._apply_lr(self.detector)
            self._learn(self.detector, batches)
        self._boost_left = max(0, self._boost_left - sum(len(X) for X, _ in batches))
        self.updates += 1
        return cfg.steps_per_update

    @staticmethod
    def _learn(detector: Any, batches: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        for X, y in batches:
            detector.learn_many(X, y)

    def wait(self) -> None:
        """Wait for the background steps in flight (re-raising their error)."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def publish(self) -> None:
        """Copy the background copy's weights (after its steps in flight) into the scoring detector."""
        if self._shadow is None:
            return
        self.wait()
        source, target = self._shadow, self.detector
        with torch.no_grad():
            for name in ("net", "scaler", "ema_net"):
                module = getattr(source, name, None)
                if isinstance(module, torch.nn.Module):
                    getattr(target, name).load_state_dict(module.state_dict())
        for name in ("n_learned", "n_steps", "n_updates"):
            if hasattr(source, name):
                setattr(target, name, getattr(source, name))

    def resync(self) -> None:
        """The scoring detector was trained directly (a warm-up fit): the background copy starts from it."""
        if self._shadow is not None:
            self.wait()
            self._shadow = copy.deepcopy(self.detector)

    def boost_lr(self, factor: float | None = None) -> None:
        """Drift hook: raise the learning rate, decaying linearly back to the base rate."""
        self._boost_factor = self.config.lr_boost_factor if factor is None else factor
        self._boost_left = self.config.lr_boost_events

    def _apply_lr(self, detector: Any) -> None:
        setter = getattr(detector, "set_learning_rate", None)
        if setter is None or self.base_lr <= 0:
            return
        frac = self._boost_left / self.config.lr_boost_events if self.config.lr_boost_events else 0.0
        setter(self.base_lr * (1.0 + (getattr(self, "_boost_factor", 1.0) - 1.0) * frac))

    @property
    def pending(self) -> int:
        return sum(len(p[0]) for p in self._pending)

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.wait()
        pend = list(self._pending)
        return {
            "shadow": self._shadow.state_dict() if self._shadow is not None else None,
            "config": asdict(self.config),
            "replay": self.replay.state(), "frauds": self.frauds.state(),
            "pending": [{"ids": p[0], "X": torch.from_numpy(p[1].copy()), "ts": torch.from_numpy(p[2].copy()),
                         "flags": torch.from_numpy(p[3].copy())} for p in pend],
            "labels": {"ids": list(self._labels), "y": list(self._labels.values())},
            "counters": {"since_update": self._since_update, "now": float(self._now), "auto_id": self._auto_id,
                         "boost_left": self._boost_left, "updates": self.updates, "base_lr": self.base_lr,
                         "boost_factor": float(getattr(self, "_boost_factor", 1.0))},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Load a state (the detector's own state is loaded before this)."""
        self.wait()
        if self._shadow is not None:
            if s.get("shadow") is not None:
                self._shadow.load_state_dict(s["shadow"])
            else:  # saved by a learner without a background copy
                self._shadow = copy.deepcopy(self.detector)
        self.replay.load(s["replay"])
        self.frauds.load(s["frauds"])
        self._pending = deque((p["ids"], p["X"].numpy(), p["ts"].numpy(), p["flags"].numpy()) for p in s["pending"])
        self._labels = dict(zip(s["labels"]["ids"], s["labels"]["y"], strict=True))
        c = s["counters"]
        self._since_update, self._now, self._auto_id = int(c["since_update"]), float(c["now"]), int(c["auto_id"])
        self._boost_left, self.updates, self.base_lr = int(c["boost_left"]), int(c["updates"]), float(c["base_lr"])
        self._boost_factor = float(c["boost_factor"])
        self.rng.bit_generator.state = s["rng"]
