"""Per-domain wiring: which features, detectors, thresholds and alarm rules serve transactions and sensors.

`StreamProcessor` is the runner's `DomainProcessor`. It featurises a whole polled batch at once
(per-entity state gives the same features for any batching), scores with every contender of its
`ChampionBoard`, and learns in fixed chunks of `learn_every` events counted from the start of the
stream: the model and thresholds only change at those boundaries, so an event's score does not
depend on how the source happened to cut batches (a backtest and a live run agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.champion import ChampionBoard, Contender, Scored
from pipeline.runner import DomainBatch
from pipeline.settings import ModelSettings, Settings

# ------------------------------------------------------------------------------ featurisers


class TransactionFeaturizer:
    """Card/terminal features (B, F); every event is ready."""

    def __init__(self, label_delay_s: float) -> None:
        from stream_models.transaction_features import TransactionFeatures, TransactionFeaturesConfig

        # No per-card sequence store (only the LSTM classifier reads it, and it is not wired here); rings
        # start at 4 events per entity and double when a window needs more.
        self.features = TransactionFeatures(TransactionFeaturesConfig(
            label_delay_days=label_delay_s / 86_400.0, sequence_length=0, initial_capacity=4))

    @property
    def names(self) -> list[str] | None:
        return list(self.features.feature_names)

    def update(self, events: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
        keys, X = self.features.update_many(events)  # X (B, F)
        return keys, X, np.ones(len(keys), dtype=bool)

    def observe_labels(self, labels: Sequence[Any]) -> None:
        self.features.observe_labels([lb.event_id for lb in labels], [int(lb.label) for lb in labels],
                                     [float(lb.ts) for lb in labels])

    def snapshot(self) -> dict[str, Any]:
        return self.features.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.features.restore(state)

    def keys_of(self, partition: int, n_partitions: int) -> list[str]:
        """Cards Kafka's default partitioner puts in `partition` (the topic is keyed by card id)."""
        return self.features.card_ids([partition], n_partitions)

    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        """The cards of one partition (terminal features are not partitioned like cards: they stay per worker)."""
        return self.features.snapshot(card_ids=self.keys_of(partition, n_partitions))

    def restore_partition(self, state: dict[str, Any]) -> None:
        self.features.restore(state, merge_cards=True)

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        self.features.drop_cards(self.keys_of(partition, n_partitions))


class SensorFeaturizer:
    """Per-device normalised windows (B, W, C); a window is ready once W readings exist."""

    def __init__(self, window: int) -> None:
        from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

        self.windows = SensorWindows(SensorWindowsConfig(window=window))

    @property
    def names(self) -> list[str] | None:
        return list(self.windows.channels) if self.windows.channels else None

    def update(self, events: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
        return self.windows.update_many(events)  # keys, X (B, W, C), ready (B,)

    def observe_labels(self, labels: Sequence[Any]) -> None:
        """Sensor features do not use labels."""

    def snapshot(self) -> dict[str, Any]:
        return self.windows.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.windows.restore(state)

    def _partitioned(self, n_partitions: int) -> Any:
        if self.windows.config.num_partitions != n_partitions:
            self.windows.config = replace(self.windows.config, num_partitions=n_partitions)
        return self.windows

    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        return self._partitioned(n_partitions).snapshot(partitions=[partition])

    def restore_partition(self, state: dict[str, Any]) -> None:
        self.windows.restore(state, merge=True)

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        self._partitioned(n_partitions).drop_partitions([partition])


# ------------------------------------------------------------------------------ detectors

DetectorFactory = Callable[[list[str], ModelSettings, str | None], Any]  # (feature names, settings, device)


def _window_config(cls: Any, names: list[str], m: ModelSettings, device: str | None, **extra: Any) -> Any:
    return cls(window=m.window, n_channels=len(names), lr=m.learning_rate, seed=m.seed, device=device, **extra)


def _lstm_autoencoder(names: list[str], m: ModelSettings, device: str | None) -> Any:
    from stream_models.lstm_autoencoder import LSTMAutoencoder, LSTMAutoencoderConfig

    cfg = _window_config(LSTMAutoencoderConfig, names, m, device, hidden=m.hidden, latent=max(2, m.hidden // 2))
    return LSTMAutoencoder(cfg, channels=names)


def _window_autoencoder(names: list[str], m: ModelSettings, device: str | None) -> Any:
    from stream_models.sensor_autoencoder import WindowAutoencoder, WindowAutoencoderConfig

    return WindowAutoencoder(_window_config(WindowAutoencoderConfig, names, m, device), channels=names)


def _lstm_forecaster(names: list[str], m: ModelSettings, device: str | None) -> Any:
    from stream_models.lstm_forecaster import LSTMForecaster, LSTMForecasterConfig

    return LSTMForecaster(_window_config(LSTMForecasterConfig, names, m, device, hidden=m.hidden), channels=names)


SENSOR_DETECTORS: dict[str, DetectorFactory] = {
    "lstm_autoencoder": _lstm_autoencoder,
    "window_autoencoder": _window_autoencoder,
    "lstm_forecaster": _lstm_forecaster,
}


def _dense_autoencoder(names: list[str], m: ModelSettings, device: str | None) -> Any:
    from stream_models.dense_autoencoder import DenseAutoencoder, DenseAutoencoderConfig

    cfg = DenseAutoencoderConfig(hidden=(4 * m.hidden, m.hidden), lr=m.learning_rate, seed=m.seed, device=device)
    return DenseAutoencoder(names, cfg)


TRANSACTION_DETECTORS: dict[str, DetectorFactory] = {
    "dense_autoencoder": _dense_autoencoder,
}


def _mlp(names: list[str], m: ModelSettings, device: str | None) -> Any:
    from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig

    cfg = MLPClassifierConfig(hidden=(4 * m.hidden,), lr=m.learning_rate, seed=m.seed, device=device)
    return MLPClassifier(names, cfg)


TRANSACTION_DETECTORS["mlp"] = _mlp
TRANSACTION_DETECTORS["mlp_classifier"] = _mlp
# Learn from (delayed) labels; the others learn from what their threshold calls normal.
SUPERVISED = {"mlp", "mlp_classifier", "fraud_detector"}
# Catalog detectors these events cannot feed (the LSTM classifier needs per-card sequences, not rows).
_NOT_WIRED = {"lstm_classifier"}


def _catalog(domain: str) -> dict[str, Any]:
    """Further detectors registered in stream_models.catalog whose input kind fits the domain."""
    from stream_models import catalog

    kind = "window" if domain == "sensors" else "tabular"
    return {n: f for n, f in catalog.load_all().items()
            if getattr(f, "input_kind", "tabular") == kind and n not in _NOT_WIRED}


def detector_names(domain: str) -> list[str]:
    registry = SENSOR_DETECTORS if domain == "sensors" else TRANSACTION_DETECTORS
    return sorted(set(registry) | set(_catalog(domain)))


def make_detector(domain: str, name: str, names: list[str], m: ModelSettings, device: str | None) -> Any:
    registry = SENSOR_DETECTORS if domain == "sensors" else TRANSACTION_DETECTORS
    if name in registry:
        return registry[name](names, m, device)
    extra = _catalog(domain)
    if name not in extra:
        from pipeline.errors import ConfigError

        raise ConfigError(f"setting '{domain}.detector' (or challengers): unknown detector {name!r}; "
                          f"choose from {detector_names(domain)}")
    params: dict[str, Any] = {"seed": m.seed}
    if domain == "sensors":
        params["window"] = m.window
    detector = extra[name](n_features=len(names), **params)
    if hasattr(detector, "feature_names"):
        detector.feature_names = list(names)  # explanations name the real features
    return detector


def make_contender(domain: str, name: str, names: list[str], m: ModelSettings, device: str | None) -> Contender:
    """Detector + threshold + online learner (replay buffer, delayed labels) + drift monitor."""
    from stream_models.drift import DriftMonitor
    from stream_models.learner import OnlineLearner, OnlineLearnerConfig

    detector = make_detector(domain, name, names, m, device)
    learner = OnlineLearner(detector, OnlineLearnerConfig(
        supervised=name in SUPERVISED, label_delay_s=m.label_delay_s, update_every_events=m.learn_every,
        update_every_ms=None, steps_per_update=m.steps_per_update, batch_size=m.batch_size,
        replay_capacity=m.replay_capacity, seed=m.seed))
    drift = DriftMonitor(m.drift_delta, reset_threshold=True, lr_boost_factor=m.drift_lr_boost,
                         lr_boost_events=20 * m.learn_every) if m.drift_delta > 0 else None
    return Contender(name, detector, make_threshold(m), learner, drift)


def make_threshold(m: ModelSettings) -> Any:
    from stream_models.thresholds import QuantileThreshold

    return QuantileThreshold(q=m.threshold_quantile, warmup=m.threshold_warmup, window=m.threshold_window,
                             refresh_every=m.learn_every)


# ------------------------------------------------------------------------------ processor


@dataclass
class _Pending:
    """Learning material of the current, unfinished chunk (ready rows only)."""

    X: list[np.ndarray]
    ids: list[list[str]]
    ts: list[np.ndarray]
    scores: list[np.ndarray]  # (n, K) per contender
    flags: list[np.ndarray]  # (n, K)
    learnable: list[np.ndarray]  # (n,) gate (sensors: device quiet since its last flag)


class StreamProcessor:
    """Featuriser + champion/challenger detectors + thresholds (+ alarm filter), learning in fixed chunks."""

    def __init__(self, domain: str, featurizer: Any, settings: ModelSettings, *, device: str | None = None,
                 alarm_filter: Any = None, quiet_rows: int = 0) -> None:
        self.domain = domain
        self.featurizer = featurizer
        self.settings = settings
        self.device = device
        self.model_version = settings.model_version
        self.alarm_filter = alarm_filter
        self.quiet_rows = quiet_rows  # learn from a device only this many rows after its last flag
        self.board: ChampionBoard | None = None
        self._names: list[str] | None = None
        self._since_flag: dict[str, int] = {}
        self._pending_n = 0
        self._pending = _Pending([], [], [], [], [], [])
        self._learned_n = 0  # events in finished chunks
        self.drift_events = 0
        self.losses: dict[str, float] = {}  # contender -> mean score of the normal rows of its last chunk
        self.events_seen = 0

    @property
    def detector_name(self) -> str:
        return self.board.champion if self.board else self.settings.detector

    def _ensure_board(self) -> ChampionBoard | None:
        if self.board is None and self.featurizer.names:
            self._names = self.featurizer.names
            names = [self.settings.detector, *self.settings.challengers]
            contenders = [make_contender(self.domain, n, self._names, self.settings, self.device) for n in names]
            self.board = ChampionBoard(contenders, self.settings.detector)
        return self.board

    # -------------------------------------------------------------------------- scoring
    def process(self, events: Sequence[Any]) -> DomainBatch:
        keys, X, ready = self.featurizer.update(events)
        B = len(keys)
        out = DomainBatch(keys=keys, scores=np.full(B, np.nan), thresholds=np.full(B, np.nan),
                          flags=np.zeros(B, bool), suppressed=np.zeros(B, bool))
        board = self._ensure_board()
        if board is None:
            return out
        for name in board.challengers:
            out.challenger_scores[name] = np.full(B, np.nan)
            out.challenger_flags[name] = np.zeros(B, bool)
        ids = [str(e.event_id) for e in events]
        ts = np.fromiter((e.ts for e in events), np.float64, B)
        start = 0
        while start < B:
            stop = start + min(B - start, self.settings.learn_every - self._pending_n)
            self._chunk(board, slice(start, stop), keys, X, ready, ids, ts, out)
            self._pending_n += stop - start
            if self._pending_n == self.settings.learn_every:
                self._learn(board)
            start = stop
        self.events_seen += B
        return out

    def _block(self, X_part: np.ndarray, pos: int) -> np.ndarray:
        """Rows placed at their chunk position in a (learn_every, ...) block: a row's arithmetic is then
        the same whatever the batch it arrived in (BLAS kernels differ by batch shape)."""
        block = np.zeros((self.settings.learn_every, *X_part.shape[1:]), dtype=np.float32)
        block[pos : pos + len(X_part)] = X_part
        return block

    def _chunk(self, board: ChampionBoard, part: slice, keys: list[str], X: np.ndarray, ready: np.ndarray,
               ids: list[str], ts: np.ndarray, out: DomainBatch) -> None:
        pos = self._pending_n
        seg_ready = ready[part]
        rows = np.arange(part.start, part.stop)[seg_ready]
        raw = np.zeros(part.stop - part.start, bool)
        if len(rows):
            sel = pos + np.flatnonzero(seg_ready)
            scored = {n: Scored(s.scores[sel], s.flags[sel], s.thresholds[sel])
                      for n, s in board.score(self._block(X[part], pos)).items()}
            champ = scored[board.champion]
            out.scores[rows], out.thresholds[rows] = champ.scores, champ.thresholds
            raw[rows - part.start] = champ.flags
            for name in board.challengers:
                out.challenger_scores[name][rows] = scored[name].scores
                out.challenger_flags[name][rows] = scored[name].flags
            board.remember([ids[i] for i in rows], ts[rows], scored)
        seg_keys = keys[part]
        alarms = self.alarm_filter.update_many(seg_keys, raw) if self.alarm_filter is not None else raw.copy()
        out.flags[part] = alarms
        out.suppressed[part] = raw & ~alarms
        gate = np.ones(len(seg_keys), bool)
        if self.quiet_rows:
            for j, key in enumerate(seg_keys):
                since = 0 if raw[j] else self._since_flag.get(key, self.quiet_rows) + 1
                self._since_flag[key] = since
                gate[j] = since > self.quiet_rows
        if len(rows):
            order = board.names
            self._pending.X.append(X[rows])
            self._pending.ids.append([ids[i] for i in rows])
            self._pending.ts.append(ts[rows])
            self._pending.scores.append(np.stack([scored[n].scores for n in order], axis=1))
            self._pending.flags.append(np.stack([scored[n].flags for n in order], axis=1))
            self._pending.learnable.append(gate[rows - part.start])
        hit = np.flatnonzero(alarms)
        if len(hit) and self.settings.top_features:
            champion = board.contenders[board.champion].detector
            explained = champion.explain_many(self._block(X[part], pos), self.settings.top_features)
            for j in hit.tolist():
                out.explanations[part.start + j] = explained[pos + j]

    def _learn(self, board: ChampionBoard) -> None:
        """End of a chunk: thresholds, drift monitors and learners of every contender take the chunk."""
        p = self._pending
        if p.X:
            X, ts = np.concatenate(p.X), np.concatenate(p.ts)
            ids = [i for part in p.ids for i in part]
            S, Fl, gate = np.concatenate(p.scores), np.concatenate(p.flags), np.concatenate(p.learnable)
            now = float(ts.max())
            burned_in = self._learned_n >= self.settings.warmup_events  # burn-in scores would inflate thresholds
            for k, name in enumerate(board.names):
                c = board.contenders[name]
                if burned_in:
                    c.threshold.update_many(S[:, k], Fl[:, k])
                    if c.drift is not None and c.drift.update_many(np.log1p(np.maximum(S[:, k], 0.0))):
                        c.drifts += 1
                        self.drift_events += 1
                        if c.drift.actions.reset_threshold:
                            c.threshold.reset()
                        if c.drift.actions.lr_boost_events:
                            c.learner.boost_lr(c.drift.actions.lr_boost_factor)
                normal = gate & ~Fl[:, k]
                if normal.any():  # for autoencoders: the reconstruction loss on the rows learned from
                    self.losses[name] = float(np.mean(S[normal, k]))
                c.learner.observe(X, Fl[:, k] | ~gate, event_ids=ids, ts=ts)
                c.learner.maybe_update(now_ts=now)
            board.expire(now, self.settings.label_delay_s)
        self._learned_n += self._pending_n
        self._pending = _Pending([], [], [], [], [], [])
        self._pending_n = 0

    # -------------------------------------------------------------------------- labels
    def apply_labels(self, labels: Sequence[Any]) -> None:
        self.featurizer.observe_labels(labels)
        if self.board is not None:
            ids, ys = [str(lb.event_id) for lb in labels], [int(lb.label) for lb in labels]
            self.board.observe_labels(ids, ys)
            for c in self.board.contenders.values():
                c.learner.observe_labels(ids, ys)

    # -------------------------------------------------------------------------- models
    def detectors(self) -> dict[str, Any]:
        """name -> detector of every contender (empty until the feature names are known)."""
        board = self._ensure_board()
        return {name: c.detector for name, c in board.contenders.items()} if board is not None else {}

    # -------------------------------------------------------------------------- partitions
    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        """The per-entity state of one Kafka partition's entities (features, alarm filter, quiet rows)."""
        from stream_models.entity_store import partition_of

        state: dict[str, Any] = {"features": self.featurizer.snapshot_partition(partition, n_partitions)}
        mine = {k for k in self._since_flag if partition_of(k, n_partitions) == partition}
        state["since_flag"] = {k: v for k, v in self._since_flag.items() if k in mine}
        if self.alarm_filter is not None:
            snap = self.alarm_filter.snapshot()
            keep = [i for i, d in enumerate(snap["devices"]) if partition_of(d, n_partitions) == partition]
            state["alarm_filter"] = {key: [snap[key][i] for i in keep] for key in ("devices", "bits", "on")}
        return state

    def restore_partition(self, state: dict[str, Any]) -> None:
        """Merge a partition's state (from `snapshot_partition`) into this processor's."""
        self.featurizer.restore_partition(state["features"])
        self._since_flag.update(state.get("since_flag", {}))
        if self.alarm_filter is not None and state.get("alarm_filter"):
            own, extra = self.alarm_filter.snapshot(), state["alarm_filter"]
            self.alarm_filter.restore({key: list(own[key]) + list(extra[key]) for key in ("devices", "bits", "on")})

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        """Forget the entities of a partition that moved to another worker."""
        from stream_models.entity_store import partition_of

        for key in [k for k in self._since_flag if partition_of(k, n_partitions) == partition]:
            del self._since_flag[key]
        if self.alarm_filter is not None:
            for device in self.alarm_filter.snapshot()["devices"]:
                if partition_of(device, n_partitions) == partition:
                    self.alarm_filter.reset(device)
        self.featurizer.drop_partition(partition, n_partitions)

    # -------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        p = self._pending
        return {
            "features": self.featurizer.snapshot(),
            "names": self._names,
            "board": self.board.state_dict() if self.board else None,
            "alarm_filter": self.alarm_filter.snapshot() if self.alarm_filter is not None else None,
            "since_flag": dict(self._since_flag),
            "pending_n": self._pending_n,
            "pending": {"X": list(p.X), "ids": list(p.ids), "ts": list(p.ts), "scores": list(p.scores),
                        "flags": list(p.flags), "learnable": list(p.learnable)},
            "drift_events": self.drift_events,
            "events_seen": self.events_seen,
            "learned_n": self._learned_n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.featurizer.restore(state["features"])
        self.board = None
        if state["board"] is not None:
            board = self._ensure_board()
            if board is None:
                raise ValueError(f"{self.domain}: checkpoint has a model but the features have no names")
            board.load_state_dict(state["board"])
        if self.alarm_filter is not None and state["alarm_filter"] is not None:
            self.alarm_filter.restore(state["alarm_filter"])
        self._since_flag = dict(state["since_flag"])
        self._pending_n = int(state["pending_n"])
        p = state["pending"]
        self._pending = _Pending(list(p["X"]), [list(i) for i in p["ids"]], list(p["ts"]), list(p["scores"]),
                                 list(p["flags"]), list(p["learnable"]))
        self.drift_events = int(state["drift_events"])
        self.events_seen = int(state["events_seen"])
        self._learned_n = int(state["learned_n"])


# ------------------------------------------------------------------------------ building


def build_processor(settings: Settings, domain: str) -> StreamProcessor:
    """The processor of one domain, as configured."""
    m = settings.model(domain)
    device = None if settings.runner.device == "auto" else settings.runner.device
    if domain == "transactions":
        return StreamProcessor(domain, TransactionFeaturizer(m.label_delay_s), m, device=device)
    from stream_models.alarm_filter import AlarmFilter, AlarmFilterConfig

    return StreamProcessor(domain, SensorFeaturizer(m.window), m, device=device,
                           alarm_filter=AlarmFilter(AlarmFilterConfig(m=m.alarm_m, n=m.alarm_n)),
                           quiet_rows=m.quiet_rows)


def build_processors(settings: Settings) -> dict[str, StreamProcessor]:
    """topic -> processor for every domain this worker handles."""
    return {settings.topics.for_domain(d): build_processor(settings, d) for d in settings.domains()}
