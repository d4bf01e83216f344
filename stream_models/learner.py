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

With `background=True` (torch detectors) the steps run on a copy of the detector beside the scoring thread: in a
forked learning process on Linux with the CPU (`process=True`: the copy never waits for the scoring thread's
interpreter lock, nor it for the copy's), else on a learning thread (torch releases the interpreter lock in its
kernels). Each update's steps end with a snapshot of the copy's weights, which reaches the scoring detector at the
next update, just before the copy takes its next steps: after update k, scores use the weights of update k - 1 (one
update behind learning inline), whatever the timing and wherever the copy learns, so a stream scores the same live
and in a backtest. `state_dict` waits for the steps in flight and holds the copy and its snapshot too.

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
import itertools
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
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
    background: bool = False  # learn on a copy beside the scoring thread (torch detectors; see the module doc)
    process: bool = True  # background: in the learning process where it can fork (Linux, CPU), else a thread

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
# the last steps asked of the learning thread and of the learning process: each runs its steps first in first out,
# so when these are done, all are
_LAST_SUBMITTED: dict[str, Future[Any]] = {}
_PROCESS_LEARNERS: weakref.WeakSet[OnlineLearner] = weakref.WeakSet()


def learning_in_flight() -> bool:
    """Whether the learning thread or process has steps queued or running."""
    return any(not future.done() for future in _LAST_SUBMITTED.values())


def wait_for_learning() -> None:
    """Block until the learning thread and process are idle, and bring the learning process's copies here, so that
    a forked child (a checkpoint) finds every learner's state without asking (errors stay with the learners, which
    re-raise them)."""
    from concurrent.futures import wait

    wait(list(_LAST_SUBMITTED.values()))
    for learner in list(_PROCESS_LEARNERS):
        learner.fetch_copy()


def _submit_learning(fn: Any, *args: Any) -> Future[Any]:
    """Queue steps on the process's one learning thread: the learners' steps run one after another beside the
    scoring thread."""
    global _LEARNING_THREAD
    if _LEARNING_THREAD is None:
        _LEARNING_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamwarden-learner")
    _LAST_SUBMITTED["thread"] = future = _LEARNING_THREAD.submit(fn, *args)
    return future


def _trains_in_background(detector: Any) -> bool:
    return isinstance(getattr(detector, "net", None), torch.nn.Module)


def _learns_in_process(detector: Any) -> bool:
    from stream_models.checkpoint import can_fork

    device = getattr(detector, "device", None)
    return can_fork() and (device is None or torch.device(device).type == "cpu")


_PUBLISHED_MODULES = ("net", "scaler", "ema_net")
_PUBLISHED_COUNTERS = ("n_learned", "n_steps", "n_updates")


def _snapshot(detector: Any) -> dict[str, Any]:
    """What the scoring detector takes from the learning copy: its modules' state (copied) and step counters."""
    modules = {name: {k: v.detach().clone() for k, v in module.state_dict().items()} for name in _PUBLISHED_MODULES
               if isinstance(module := getattr(detector, name, None), torch.nn.Module)}
    return {"modules": modules,
            "counters": {name: getattr(detector, name) for name in _PUBLISHED_COUNTERS if hasattr(detector, name)}}


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def _set_learning_rate(detector: Any, lr: float | None) -> None:
    setter = getattr(detector, "set_learning_rate", None)
    if lr is not None and setter is not None:
        setter(lr)


def _learn(detector: Any, batches: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
    for X, y in batches:
        detector.learn_many(X, y)


def _learn_and_snapshot(detector: Any, lr: float | None,
                        batches: list[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
    _set_learning_rate(detector, lr)
    _learn(detector, batches)
    return _snapshot(detector)


class _LearningProcess:
    """A forked child that keeps the learning copies of this process's learners and runs their steps, in the order
    asked, on its own core and interpreter. Requests go through a sending thread (a request never waits for the
    child to finish its steps); a receiving thread hands each reply to the request's future. The child leaves when
    this process closes its end of the pipe (exits, or is killed)."""

    def __init__(self) -> None:
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                keep = sorted((requests_r, replies_w))
                os.closerange(3, keep[0])  # the parent's sockets and files are not the child's
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
                _serve(Connection(requests_r, writable=False), Connection(replies_w, readable=False))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(requests_r)
        os.close(replies_w)
        self.pid, self.owner = pid, os.getpid()
        self._requests = Connection(requests_w, readable=False)
        self._replies = Connection(replies_r, writable=False)
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: deque[Future[Any]] = deque()  # requests with a reply to come, oldest first
        self._lock = threading.Lock()
        self.failure: str | None = None
        threading.Thread(target=self._send_loop, name="streamwarden-learning-send", daemon=True).start()
        threading.Thread(target=self._receive_loop, name="streamwarden-learning-receive", daemon=True).start()

    def request(self, message: tuple[Any, ...], reply: bool) -> Future[Any] | None:
        future: Future[Any] | None = Future() if reply else None
        with self._lock:
            if self.failure is not None:
                raise ModelError(self.failure)
            if future is not None:
                self._waiting.append(future)
                _LAST_SUBMITTED["process"] = future
            self._outbox.put(message)
        return future

    def _send_loop(self) -> None:
        while True:
            message = self._outbox.get()
            try:
                self._requests.send(message)
            except OSError:
                return  # the receiving thread reports the child's end

    def _receive_loop(self) -> None:
        while True:
            try:
                ok, value = self._replies.recv()
            except (EOFError, OSError):
                try:
                    status = f"exit status {os.waitpid(self.pid, 0)[1]}"
                except ChildProcessError:  # reaped elsewhere
                    status = "exit status unknown"
                with self._lock:
                    self.failure = f"the learning process ended unexpectedly ({status})"
                    while self._waiting:
                        self._waiting.popleft().set_exception(ModelError(self.failure))
                return
            with self._lock:
                future = self._waiting.popleft()
            if ok:
                future.set_result(value)
            else:
                future.set_exception(ModelError(f"learning process: {value}"))


def _serve(requests: Connection, replies: Connection) -> None:
    """The learning process: requests ("put", key, pickled detector), ("drop", key), ("learn", key, lr, batches) and
    ("state", key); the last two reply (True, snapshot or state) or (False, the error)."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a stop signal is the parent's to handle; EOF ends us
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)  # one core; the parent's intra-op threads do not exist here
    copies: dict[int, Any] = {}
    broken: dict[int, str] = {}
    while True:
        try:
            op, key, *args = requests.recv()
        except EOFError:
            return
        try:
            if op == "put":
                broken.pop(key, None)
                copies[key] = pickle.loads(args[0])
            elif op == "drop":
                copies.pop(key, None)
                broken.pop(key, None)
            elif key in broken:
                replies.send((False, broken[key]))
            elif op == "learn":
                replies.send((True, _learn_and_snapshot(copies[key], *args)))
            elif op == "state":
                replies.send((True, copies[key].state_dict()))
        except Exception:
            error = traceback.format_exc(limit=8)
            if op in ("learn", "state"):
                replies.send((False, error))
            else:
                broken[key] = error


_PROCESS: _LearningProcess | None = None
_KEYS = itertools.count()


def _learning_process() -> _LearningProcess:
    global _PROCESS
    if _PROCESS is None or _PROCESS.owner != os.getpid():
        _PROCESS = _LearningProcess()
    return _PROCESS


def _drop_copy(key: int) -> None:
    process = _PROCESS
    if process is not None and process.owner == os.getpid() and process.failure is None:
        process.request(("drop", key), reply=False)


class OnlineLearner:
    """Feeds a detector from the stream: `observe`, `observe_labels`, `maybe_update`, `boost_lr`."""

    def __init__(self, detector: _Learnable, config: OnlineLearnerConfig | None = None) -> None:
        self.detector = detector
        self.config = config or OnlineLearnerConfig()
        # where the steps run: "inline", "thread" (a copy here) or "process" (a copy in the learning process)
        self.mode = "inline"
        self._key = next(_KEYS)
        self._copy_state: dict[str, Any] | None = None  # the learning process's copy, brought here (fetch_copy)
        if self.config.background and _trains_in_background(detector):
            self.mode = "thread"
            if self.config.process and _learns_in_process(detector):
                try:
                    self._put_copy(detector)
                    self.mode = "process"
                    _PROCESS_LEARNERS.add(self)
                    weakref.finalize(self, _drop_copy, self._key)
                except (pickle.PicklingError, TypeError, AttributeError):
                    pass  # a plug-in class that pickle cannot find by name learns in the thread
        self._shadow: Any = copy.deepcopy(detector) if self.mode == "thread" else None
        self._unpublished: deque[Future[dict[str, Any]]] = deque()  # each update's snapshot, oldest first
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
        lr = self._learning_rate_now()
        if self.mode == "inline":
            _set_learning_rate(self.detector, lr)
            _learn(self.detector, batches)
        else:
            while self._unpublished:  # the previous update's weights start scoring now
                self._publish(self._unpublished.popleft().result())
            if self.mode == "thread":
                self._unpublished.append(_submit_learning(_learn_and_snapshot, self._shadow, lr, batches))
            else:
                self._copy_state = None
                future = _learning_process().request(("learn", self._key, lr, batches), reply=True)
                assert future is not None
                self._unpublished.append(future)
        self._boost_left = max(0, self._boost_left - sum(len(X) for X, _ in batches))
        self.updates += 1
        return cfg.steps_per_update

    def wait(self) -> None:
        """Wait for the background steps in flight (re-raising their error); their snapshot stays unpublished."""
        for future in self._unpublished:
            future.result()

    def _publish(self, snapshot: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, state in snapshot["modules"].items():
                getattr(self.detector, name).load_state_dict(state)
        for name, value in snapshot["counters"].items():
            setattr(self.detector, name, value)

    def _put_copy(self, detector: Any) -> None:
        payload = pickle.dumps(detector)
        self._copy_state = None
        _learning_process().request(("put", self._key, payload), reply=False)

    def fetch_copy(self) -> dict[str, Any] | None:
        """The learning copy's state (after its steps in flight); from the learning process, it is kept here until
        the copy learns again."""
        if self.mode == "thread":
            self.wait()
            return self._shadow.state_dict()
        if self.mode == "process" and self._copy_state is None:
            self.wait()
            future = _learning_process().request(("state", self._key), reply=True)
            assert future is not None
            self._copy_state = future.result()
        return self._copy_state

    def resync(self) -> None:
        """The scoring detector was trained directly (a warm-up fit): the background copy starts from it, and the
        snapshot of an earlier update is dropped."""
        if self.mode != "inline":
            self.wait()
            self._unpublished.clear()
            if self.mode == "thread":
                self._shadow = copy.deepcopy(self.detector)
            else:
                self._put_copy(self.detector)

    def boost_lr(self, factor: float | None = None) -> None:
        """Drift hook: raise the learning rate, decaying linearly back to the base rate."""
        self._boost_factor = self.config.lr_boost_factor if factor is None else factor
        self._boost_left = self.config.lr_boost_events

    def _learning_rate_now(self) -> float | None:
        if self.base_lr <= 0:
            return None
        frac = self._boost_left / self.config.lr_boost_events if self.config.lr_boost_events else 0.0
        return self.base_lr * (1.0 + (getattr(self, "_boost_factor", 1.0) - 1.0) * frac)

    @property
    def pending(self) -> int:
        return sum(len(p[0]) for p in self._pending)

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.wait()
        pend = list(self._pending)
        return {
            "shadow": self.fetch_copy(),
            "unpublished": [future.result() for future in self._unpublished],
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
        if self.mode != "inline":
            shadow = copy.deepcopy(self.detector)  # saved by a learner without a background copy: it starts here
            if s.get("shadow") is not None:
                shadow.load_state_dict(s["shadow"])
            # saved before snapshots were kept: the copy's weights were still to publish
            unpublished = s["unpublished"] if "unpublished" in s else \
                [_snapshot(shadow)] if s.get("shadow") is not None else []
            self._unpublished = deque(_done(snapshot) for snapshot in unpublished)
            if self.mode == "thread":
                self._shadow = shadow
            else:
                self._put_copy(shadow)
        self.replay.load(s["replay"])
        self.frauds.load(s["frauds"])
        self._pending = deque((p["ids"], p["X"].numpy(), p["ts"].numpy(), p["flags"].numpy()) for p in s["pending"])
        self._labels = dict(zip(s["labels"]["ids"], s["labels"]["y"], strict=True))
        c = s["counters"]
        self._since_update, self._now, self._auto_id = int(c["since_update"]), float(c["now"]), int(c["auto_id"])
        self._boost_left, self.updates, self.base_lr = int(c["boost_left"]), int(c["updates"]), float(c["base_lr"])
        self._boost_factor = float(c["boost_factor"])
        self.rng.bit_generator.state = s["rng"]
