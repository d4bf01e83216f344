"""The stream engine: featurizer -> every contender scores -> thresholds -> alarm rule -> chunked learning.

It is the only engine: the live worker, `streamwarden backtest`, the demo and the quality benchmarks
all run it (pipeline/ only wraps Kafka and Redis around it). It featurises a whole polled batch at
once (per-entity state gives the same features for any batching), scores with every contender of its
`ChampionBoard` (each fed the input kind its detector consumes), and learns in fixed chunks of
`learn_every` events counted from the start of the stream: models and thresholds only change at those
boundaries, so an event's score does not depend on how the source happened to cut batches (a backtest
and a live run agree).

Warm-up: the first `warmup_events` events burn the models in while thresholds ignore their scores.
With `warmup_fit_epochs` > 0 the models instead train that many passes over the warm-up at its end,
and each threshold is set from the fitted model's warm-up scores (SKAB's protocol); with
`learn_after_warmup=False` models and thresholds are then frozen.

>>> from types import SimpleNamespace as Ev
>>> engine = build_engine(EngineConfig(domain="transactions", detector="halfspace_trees", learn_every=4))
>>> batch = engine.process([Ev(event_id=str(i), ts=1.7e9 + i, card_id="c1", terminal_id="t1", amount=10.0)
...                         for i in range(6)])
>>> batch.scores.shape, bool(batch.flags.any()), bool(batch.warming_up.all())
((6,), False, True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_models import catalog
from stream_models.card_profile import CardProfile
from stream_models.engine.batch import DomainBatch, Episode
from stream_models.engine.champion import ChampionBoard, Contender, Scored
from stream_models.engine.config import EngineConfig
from stream_models.engine.featurizers import (
    RecordFeaturizer,
    SensorFeaturizer,
    TransactionFeaturizer,
    check_inputs,
)
from stream_models.reading_profile import ReadingProfile

log = logging.getLogger("stream_models.engine")
SCORE_ROWS = 128  # rows per scoring call (a fixed shape keeps each row's scores independent of the batching)
# features a label-free detector never sees: calendar ones (the first weekend or night would look novel on every
# transaction) and those built from revealed labels (the first chargebacks, a label delay in, would too): either
# raised alert storms that nothing else explained
BLIND_WITHOUT_LABELS = frozenset({
    "TX_DURING_WEEKEND", "TX_DURING_NIGHT", "HOUR_SIN", "HOUR_COS", "WEEKDAY", "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW", "CARD_REVEALED_FRAUDS", "TERMINAL_FRAUD_RUN_LENGTH",
    "TERMINAL_FRAUD_RUN_AGE_DAYS", "TERMINAL_DAYS_SINCE_REVEALED_FRAUD", "TERMINAL_LAST_LABEL_FRAUD"})


def detector_names(domain: str) -> list[str]:
    """Registered detectors whose input this domain can give (rows and sequences for transactions;
    windows, sequences and rows for sensors)."""
    kinds = {"transactions": TransactionFeaturizer.kinds, "records": RecordFeaturizer.kinds}.get(
        domain, SensorFeaturizer.kinds)
    return [n for n in catalog.names() if catalog.consumes(n) in kinds]


def make_detector(config: EngineConfig, name: str, feature_names: list[str]) -> Any:
    """Detector `name` from the catalog, with the engine's seed/device, its window or sequence length,
    and the user's `params[name]` on top."""
    kind = catalog.consumes(name)
    params: dict[str, Any] = {"seed": config.seed, "device": config.device}
    if kind == "windows" or (kind == "sequences" and config.domain == "sensors"):
        params["window"] = config.window
    elif kind == "sequences":
        params["window"] = config.sequence_length
    params.update(config.params.get(name, {}))
    return catalog.make(name, n_features=len(feature_names), feature_names=list(feature_names), **params)


def make_contender(config: EngineConfig, name: str, feature_names: list[str]) -> Contender:
    """Detector + threshold + online learner (replay buffer, delayed labels) + drift monitor."""
    from stream_models.drift import DriftMonitor
    from stream_models.learner import OnlineLearner, OnlineLearnerConfig
    from stream_models.thresholds import QuantileThreshold

    detector = make_detector(config, name, feature_names)
    supervised = catalog.learns_from_labels(name)
    steps = config.steps_per_update if supervised or config.label_free_steps_per_update is None \
        else config.label_free_steps_per_update
    learner = OnlineLearner(detector, OnlineLearnerConfig(
        supervised=supervised, label_delay_s=config.label_delay_s,
        update_every_events=config.learn_every, update_every_ms=None, steps_per_update=steps,
        batch_size=config.batch_size, replay_capacity=config.replay_capacity, seed=config.seed,
        background=config.learn_in_background, process=config.learn_in_process))
    drift = DriftMonitor(config.drift_delta, reset_threshold=True, lr_boost_factor=config.drift_lr_boost,
                         lr_boost_events=20 * config.learn_every) if config.drift_delta > 0 else None
    threshold = QuantileThreshold(q=config.threshold_quantile, warmup=config.threshold_warmup,
                                  window=config.threshold_window, refresh_every=config.learn_every)
    blind = () if catalog.learns_from_labels(name) else tuple(
        i for i, f in enumerate(feature_names) if f in BLIND_WITHOUT_LABELS)
    return Contender(name, detector, catalog.consumes(name), threshold, learner, drift, blind=blind)


class _Pending:
    """Learning material of the current, unfinished chunk (ready rows only)."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[np.ndarray]] = {}  # kind -> parts of (n, ...)
        self.ids: list[list[str]] = []
        self.ts: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []  # (n, K) per contender
        self.flags: list[np.ndarray] = []  # (n, K)
        self.learnable: list[np.ndarray] = []  # (n,) gate (sensors: device quiet since its last flag)

    def state(self) -> dict[str, Any]:
        return {"inputs": {k: list(v) for k, v in self.inputs.items()}, "ids": list(self.ids), "ts": list(self.ts),
                "scores": list(self.scores), "flags": list(self.flags), "learnable": list(self.learnable)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Pending:
        p = cls()
        p.inputs = {k: list(v) for k, v in state["inputs"].items()}
        p.ids = [list(i) for i in state["ids"]]
        p.ts, p.scores, p.flags = list(state["ts"]), list(state["scores"]), list(state["flags"])
        p.learnable = list(state["learnable"])
        return p


class StreamEngine:
    """Featuriser + champion/challenger detectors + thresholds (+ alarm filter), learning in fixed chunks.

    With `profile_threshold` > 0 a cold-start rule scores every event beside the models and raises alerts of
    its own, from the first events, whatever the models' warm-up: the card profile for transactions
    (`stream_models.card_profile`), the reading profile for sensors (`stream_models.reading_profile`).
    """

    def __init__(self, config: EngineConfig, featurizer: Any, *, alarm_filter: Any = None) -> None:
        self.config = config
        self.domain = config.domain
        self.featurizer = featurizer
        self.model_version = config.model_version
        self.alarm_filter = alarm_filter
        self.kinds = sorted({catalog.consumes(n) for n in config.contenders})
        check_inputs(config.domain, self.kinds, featurizer.kinds)
        self.board: ChampionBoard | None = None
        self._names: list[str] | None = None
        self._since_flag: dict[str, int] = {}
        self._pending_n = 0
        self._pending = _Pending()
        self._learned_n = 0  # events in finished chunks
        self._warm_done = config.warmup_events == 0 and config.warmup_fit_epochs == 0
        self._warm: dict[str, list[np.ndarray]] = {}  # warm-up inputs kept for the warm-up fit
        self.drift_events = 0
        self.promotions = 0
        self.losses: dict[str, float] = {}  # contender -> mean score of the normal rows of its last chunk
        self.events_seen = 0
        self.regime_changes = 0
        self.held_back = 0  # alerts over the per-minute budget
        self._budget_counts: dict[int, int] = {}  # event-time minute -> alerts raised in it
        self._episodes: dict[str, list[Any]] = {}  # device -> its open alarm episode
        self._regime_pending: set[str] = set()  # devices muted until the chunk's end starts them afresh
        self.profile: CardProfile | ReadingProfile | None = None
        if config.profile_threshold > 0 and config.domain != "records":
            self.profile = CardProfile() if config.domain == "transactions" else ReadingProfile()

    @property
    def detector_name(self) -> str:
        return self.board.champion if self.board else self.config.detector

    @property
    def warming_up(self) -> bool:
        return not self._warm_done

    def armed(self, name: str) -> bool:
        """Whether contender `name` can flag: warm-up over and its threshold learned."""
        board = self.board
        return bool(board is not None and self._warm_done
                    and math.isfinite(float(board.contenders[name].threshold.threshold)))

    def warmup_progress(self) -> str:
        """Warm-up events seen of those needed, e.g. "400/400"."""
        need = self.config.warmup_events
        return f"{min(self.events_seen, need)}/{need}"

    def _ensure_board(self) -> ChampionBoard | None:
        if self.board is None and self.featurizer.names:
            self._names = self.featurizer.names
            contenders = [make_contender(self.config, n, self._names) for n in self.config.contenders]
            self.board = ChampionBoard(contenders, self.config.detector)
        return self.board

    # -------------------------------------------------------------------------- scoring
    def process(self, events: Sequence[Any]) -> DomainBatch:
        B = len(events)
        out = DomainBatch(keys=[""] * B, scores=np.full(B, np.nan), thresholds=np.full(B, np.nan),
                          flags=np.zeros(B, bool), suppressed=np.zeros(B, bool), warming_up=np.ones(B, bool))
        ids = [str(e.event_id) for e in events]
        ts = np.fromiter((e.ts for e in events), np.float64, B)
        start = 0
        while start < B:
            room = self.config.learn_every - self._pending_n
            to_warm_end = self.config.warmup_events - (self._learned_n + self._pending_n)
            if to_warm_end > 0:  # the end of warm-up is a chunk boundary
                room = min(room, to_warm_end)
            stop = start + min(B - start, room)
            # featurised chunk by chunk: per-device resets at a chunk's end reach the next chunk's features
            keys, inputs, ready = self.featurizer.update(events[start:stop])
            out.keys[start:stop] = keys
            board = self._ensure_board()
            if board is None:
                return out
            self._columns(board, out)
            part = slice(start, stop)
            rule_input = inputs[self.profile.consumes] if self.profile is not None else None
            self._chunk(board, part, keys, {k: inputs[k] for k in self.kinds}, ready, ids[part], ts[part], out,
                        rule_input)
            if self.config.alert_budget_per_minute:
                self._alert_budget(part, ts[part], out)
            self._pending_n += stop - start
            if stop - start == room:
                self._learn(board)
            start = stop
        self.events_seen += B
        return out

    def _columns(self, board: ChampionBoard, out: DomainBatch) -> None:
        """Every contender's (and the card profile's) columns of `out`, once."""
        B = len(out.keys)
        for name in [*board.names, *([self.profile.name] if self.profile is not None else [])]:
            if name not in out.contender_scores:
                out.contender_scores[name] = np.full(B, np.nan)
                out.contender_flags[name] = np.zeros(B, bool)
        if self.profile is not None:
            out.rule, out.rule_threshold = self.profile.name, self.config.profile_threshold
        out.per_episode = self.alarm_filter is not None

    def _profile_alerts(self, part: slice, X: np.ndarray, ts: np.ndarray, out: DomainBatch,
                        armed: bool) -> np.ndarray:
        """The cold-start rule scores the rows `X` of `part` (NaN where it cannot yet); returns its alerts (they join
        the champion's). With `profile_until_armed` it hands over: no alerts of its own once the champion is `armed`."""
        assert self.profile is not None and self._names is not None
        threshold = self.config.profile_threshold
        scores, reasons = self.profile.score_rows(X, self._names, ts, explain_at=threshold, exclude_at=threshold)
        flags = (scores >= threshold) & (not (armed and self.config.profile_until_armed))
        out.contender_scores[self.profile.name][part] = scores
        out.contender_flags[self.profile.name][part] = flags
        for j, reason in reasons.items():
            if flags[j]:
                out.reasons[part.start + j] = reason
        return flags

    def _alert_budget(self, part: slice, ts: np.ndarray, out: DomainBatch) -> None:
        """At most `alert_budget_per_minute` alerts per event-time minute: the rest are held back (suppressed)
        and counted; the first one held back in a minute is reported in `out.over_budget`."""
        budget = self.config.alert_budget_per_minute
        for j in np.flatnonzero(out.flags[part]).tolist():
            minute = int(ts[j] // 60)
            count = self._budget_counts[minute] = self._budget_counts.get(minute, 0) + 1
            if count > budget:
                out.flags[part.start + j] = False
                out.suppressed[part.start + j] = True
                out.held_back += 1
                self.held_back += 1
                if count == budget + 1:
                    out.over_budget.append(part.start + j)
        if len(self._budget_counts) > 60:  # keep the last hour of minutes
            for minute in sorted(self._budget_counts)[:-60]:
                del self._budget_counts[minute]

    @staticmethod
    def _blocks(part: np.ndarray, offset: int) -> np.ndarray:
        """Rows placed at their chunk position (`offset` into its SCORE_ROWS-row block) in whole blocks. Each block
        is scored on its own, so a row's arithmetic is the same whatever the batch it arrived in (BLAS kernels
        differ by batch shape), and a poll of a few events scores one block, not the whole chunk."""
        span = -(-(offset + len(part)) // SCORE_ROWS) * SCORE_ROWS
        block = np.zeros((span, *part.shape[1:]), dtype=np.float32)
        block[offset : offset + len(part)] = part
        return block

    @staticmethod
    def _per_block(fn: Any, rows: np.ndarray) -> dict[int, Any]:
        """`fn(start)` of each SCORE_ROWS-row block that holds one of `rows`, as {block start: result}."""
        return {start: fn(start) for start in (np.unique(rows // SCORE_ROWS) * SCORE_ROWS).tolist()}

    def _chunk(self, board: ChampionBoard, part: slice, keys: list[str], inputs: dict[str, np.ndarray],
               ready: np.ndarray, ids: list[str], ts: np.ndarray, out: DomainBatch,
               rule_input: np.ndarray | None = None) -> None:
        """Score one chunk segment: `part` places it in `out`; the other arguments hold just its events."""
        pos = self._pending_n
        local = np.flatnonzero(ready)
        rows = part.start + local
        raw = np.zeros(len(keys), bool)
        champion = board.contenders[board.champion]
        armed = self._warm_done and math.isfinite(float(champion.threshold.threshold))
        assert out.warming_up is not None
        out.warming_up[part] = ~ready | (not armed)
        offset = pos % SCORE_ROWS  # the segment's first row in `blocks`
        blocks = {k: self._blocks(v, offset) for k, v in inputs.items()}
        if len(rows):
            sel = offset + local
            parts = self._per_block(lambda i: board.score({k: b[i : i + SCORE_ROWS] for k, b in blocks.items()}), sel)
            # each row's place in the scored blocks laid end to end
            at = np.searchsorted(list(parts), sel // SCORE_ROWS * SCORE_ROWS) * SCORE_ROWS + sel % SCORE_ROWS

            def gather(name: str, field: str) -> np.ndarray:
                return np.concatenate([getattr(p[name], field) for p in parts.values()])[at]

            scored = {n: Scored(gather(n, "scores"), gather(n, "flags"), gather(n, "thresholds")) for n in board.names}
            champ = scored[board.champion]
            out.scores[rows], out.thresholds[rows] = champ.scores, champ.thresholds
            raw[local] = champ.flags if self.config.label_free_alerts or catalog.learns_from_labels(board.champion) \
                else False
            for name in board.names:
                out.contender_scores[name][rows] = scored[name].scores
                out.contender_flags[name][rows] = scored[name].flags
            board.remember([ids[i] for i in local], ts[local], scored)
        out.champions[part] = [board.champion] * len(keys)
        alarms = self.alarm_filter.update_many(keys, raw) if self.alarm_filter is not None else raw.copy()
        if self.alarm_filter is not None and self.config.alarm_severe and len(rows):
            # a single reading far above the threshold (a spike) alarms without waiting for the filter
            score, threshold = out.scores[part.start : part.stop], out.thresholds[part.start : part.stop]
            alarms |= raw & (threshold > 0) & (score >= self.config.alarm_severe * threshold)
        assert out.champion_alerts is not None
        out.champion_alerts[part] = alarms
        if rule_input is not None:
            alarms |= self._profile_alerts(part, rule_input, ts, out, armed)
        if self.alarm_filter is not None:
            alarms &= ~self._episode_watch(keys, alarms, ids, ts, part, out)
        out.flags[part] = alarms
        out.suppressed[part] = raw & ~alarms
        gate = np.ones(len(keys), bool)
        if self.config.quiet_rows and self.alarm_filter is not None:
            quiet, since_flag, open_gate = self.config.quiet_rows, self._since_flag, []
            for key, flagged in zip(keys, raw.tolist(), strict=True):
                since = since_flag[key] = 0 if flagged else since_flag.get(key, quiet) + 1
                open_gate.append(since > quiet)
            gate = np.array(open_gate, bool)
        if len(rows):
            for kind, values in inputs.items():
                self._pending.inputs.setdefault(kind, []).append(values[local])
            self._pending.ids.append([ids[i] for i in local])
            self._pending.ts.append(ts[local])
            self._pending.scores.append(np.stack([scored[n].scores for n in board.names], axis=1))
            self._pending.flags.append(np.stack([scored[n].flags for n in board.names], axis=1))
            self._pending.learnable.append(gate[local])
        if self.config.top_features:
            # the rows that raise an alert (an alarm episode's first row), each on its own: the same arithmetic
            # whatever the batch it arrived in
            values = inputs[champion.consumes]
            alerting = [i - part.start for i, kind, _ in out.episodes if kind == "open" and i >= part.start] \
                if self.alarm_filter is not None else np.flatnonzero(alarms).tolist()
            for j in alerting:
                out.explanations[part.start + j] = champion.detector.explain_many(
                    champion.view(values[j : j + 1]), self.config.top_features)[0]

    def _episode_watch(self, keys: list[str], alarms: np.ndarray, ids: list[str], ts: np.ndarray, part: slice,
                       out: DomainBatch) -> np.ndarray:
        """Follow each device's alarm episode: it opens at an alarm and closes after `episode_gap_rows` quiet rows
        (`out.episodes` gets both ends). An episode lasting `regime_rows` is a regime change: it closes as one,
        and the device is muted until the chunk's end, when its windows, normalisation and alarm state start
        afresh (it warms up again like a new device). Returns the muted rows."""
        muted = np.zeros(len(keys), bool)
        gap, regime = self.config.episode_gap_rows, self.config.regime_rows
        for j, (key, alarm) in enumerate(zip(keys, alarms.tolist(), strict=True)):
            if key in self._regime_pending:
                muted[j] = True
                continue
            # [rows, quiet rows since its last alarm, start ts, peak, opener id, opener's threshold]
            episode = self._episodes.get(key)
            if episode is None:
                if not alarm:
                    continue
                _, score, threshold = out.verdict(part.start + j)
                episode = self._episodes[key] = [0, 0, float(ts[j]), score, ids[j], threshold]
                out.episodes.append((part.start + j, "open",
                                     Episode(ids[j], float(ts[j]), float(ts[j]), score, 1, threshold)))
            episode[0] += 1
            if alarm:
                episode[1] = 0
                episode[3] = max(episode[3], out.verdict(part.start + j)[1])
            else:
                episode[1] += 1
            if episode[1] >= gap or (regime and episode[0] >= regime):
                del self._episodes[key]
                kind = "close" if episode[1] >= gap else "regime change"
                out.episodes.append((part.start + j, kind, Episode(episode[4], episode[2], float(ts[j]), episode[3],
                                                                   episode[0], episode[5])))
                if kind == "regime change":
                    self._regime_pending.add(key)
                    self.regime_changes += 1
                    log.info("regime change: a device alarmed for %d rows; it re-learns its normal", episode[0],
                             extra={"domain": self.domain, "entity": key})
                    muted[j] = True
        return muted

    # -------------------------------------------------------------------------- learning
    def _learn(self, board: ChampionBoard) -> None:
        """End of a chunk: thresholds, drift monitors and learners of every contender take the chunk."""
        p = self._pending
        cfg = self.config
        warm_before = self._warm_done
        if p.ids:
            inputs = {k: np.concatenate(v) for k, v in p.inputs.items()}
            ts = np.concatenate(p.ts)
            ids = [i for part in p.ids for i in part]
            S, Fl, gate = np.concatenate(p.scores), np.concatenate(p.flags), np.concatenate(p.learnable)
            now = float(ts.max())
            if cfg.warmup_fit_epochs and not self._warm_done:
                for kind, values in inputs.items():
                    self._warm.setdefault(kind, []).append(values)
            elif warm_before and not cfg.learn_after_warmup:
                pass  # frozen after warm-up
            else:
                self._learn_chunk(board, inputs, ids, ts, S, Fl, gate, now, update_thresholds=warm_before)
            board.expire(now, cfg.label_delay_s)
        self._start_afresh()
        if self.profile is not None:
            self.profile.end_chunk()
        self._learned_n += self._pending_n
        self._pending = _Pending()
        self._pending_n = 0
        if not self._warm_done and self._learned_n >= cfg.warmup_events:
            warm_rows = sum(len(v) for v in next(iter(self._warm.values()), []))
            if not cfg.warmup_fit_epochs:
                self._warm_done = True
            elif warm_rows >= max(1, cfg.warmup_events // 2):
                self._fit_warmup(board)
                self._warm_done = True
        if cfg.auto_promote and self._warm_done:
            # a classifier is promoted once it has learned from as many frauds as the board has rated: labels
            # can reach the board before the stream reaches their reveal time (a worker behind its backlog)
            ready = [n for n, c in board.contenders.items()
                     if not catalog.learns_from_labels(n) or self._learned_enough(c)]
            best = board.best_by_labels(cfg.promote_min_positives, cfg.promote_margin, ready)
            if best is not None:
                log.info("champion promoted on labels", extra={"old": board.champion, "new": best})
                board.promote(best)
                self.promotions += 1

    def _learn_chunk(self, board: ChampionBoard, inputs: dict[str, np.ndarray], ids: list[str], ts: np.ndarray,
                     S: np.ndarray, Fl: np.ndarray, gate: np.ndarray, now: float, update_thresholds: bool) -> None:
        for k, name in enumerate(board.names):
            c = board.contenders[name]
            if update_thresholds:  # burn-in scores would inflate thresholds
                c.threshold.update_many(S[:, k], Fl[:, k])
                drifts = c.drift.update_many(np.log1p(np.maximum(S[:, k], 0.0))) if c.drift is not None else []
                if drifts:
                    c.drifts += 1
                    self.drift_events += 1
                    if c.drift.actions.reset_threshold:
                        # re-learn from the scores after the change; the old threshold serves until there are enough
                        # (a plain reset left it unarmed until the next chunk, and a drift in every chunk, as a
                        # learning autoencoder's scores give, kept it unarmed for good)
                        after = drifts[-1].index + 1
                        c.threshold.reset(keep_threshold=True)
                        c.threshold.update_many(S[after:, k], Fl[after:, k])
                    if c.drift.actions.lr_boost_events:
                        c.learner.boost_lr(c.drift.actions.lr_boost_factor)
            normal = gate & ~Fl[:, k]
            if normal.any():  # for autoencoders: the reconstruction loss on the rows learned from
                self.losses[name] = float(np.mean(S[normal, k]))
            c.learner.observe(c.view(inputs[c.consumes]), Fl[:, k] | ~gate, event_ids=ids, ts=ts)
            c.learner.maybe_update(now_ts=now)
            if self._probabilities_count(c):
                c.threshold.set_ceiling(self.config.probability_threshold)

    def _learned_enough(self, c: Contender) -> bool:
        """Whether a classifier has learned from as many frauds as a promotion needs (before that its scores are an
        untrained net's)."""
        return len(c.learner.frauds) >= self.config.promote_min_positives

    def _probabilities_count(self, c: Contender) -> bool:
        """A classifier's scores are probabilities worth a threshold of their own (`probability_threshold`) once it
        has learned enough (`_learned_enough`)."""
        return bool(self.config.probability_threshold and c.threshold.ceiling is None
                    and catalog.learns_from_labels(c.name) and self._learned_enough(c))

    def _start_afresh(self) -> None:
        """Devices with a regime change forget their windows, normalisation and alarm state (and may learn)."""
        if not self._regime_pending:
            return
        self.featurizer.forget(sorted(self._regime_pending))
        for key in self._regime_pending:
            if self.alarm_filter is not None:
                self.alarm_filter.reset(key)
            self._since_flag.pop(key, None)
        self._regime_pending = set()

    def _fit_warmup(self, board: ChampionBoard) -> None:
        """Train every contender on the warm-up, then set its threshold from its scores on the warm-up's last
        `warmup_holdout` share, which it did not train on (scores on training rows are too low to set one)."""
        warm = {k: np.concatenate(v) for k, v in self._warm.items()}
        for c in board.contenders.values():
            X = c.view(warm[c.consumes])
            split = len(X) - int(len(X) * self.config.warmup_holdout)
            fit_on, calibrate_on = X[:split], (X[split:] if split < len(X) else X)
            for _ in range(self.config.warmup_fit_epochs):
                c.detector.learn_many(fit_on)
            if c.learner is not None:
                c.learner.resync()
            c.threshold.fit(np.asarray(c.detector.score_many(calibrate_on), np.float64))
        self._warm = {}

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
        mine = lambda key: partition_of(key, n_partitions) == partition  # noqa: E731
        state["since_flag"] = {k: v for k, v in self._since_flag.items() if mine(k)}
        state["episodes"] = {k: list(v) for k, v in self._episodes.items() if mine(k)}
        state["regime_pending"] = sorted(k for k in self._regime_pending if mine(k))
        if self.alarm_filter is not None:
            snap = self.alarm_filter.snapshot()
            keep = [i for i, d in enumerate(snap["devices"]) if partition_of(d, n_partitions) == partition]
            state["alarm_filter"] = {key: [snap[key][i] for i in keep] for key in ("devices", "bits", "on")}
        return state

    def restore_partition(self, state: dict[str, Any]) -> None:
        """Merge a partition's state (from `snapshot_partition`) into this engine's."""
        self.featurizer.restore_partition(state["features"])
        self._since_flag.update(state.get("since_flag", {}))
        self._episodes.update({k: list(v) for k, v in state.get("episodes", {}).items()})
        self._regime_pending.update(state.get("regime_pending", []))
        if self.alarm_filter is not None and state.get("alarm_filter"):
            own, extra = self.alarm_filter.snapshot(), state["alarm_filter"]
            self.alarm_filter.restore({key: list(own[key]) + list(extra[key]) for key in ("devices", "bits", "on")})

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        """Forget the entities of a partition that moved to another worker."""
        from stream_models.entity_store import partition_of

        for store in (self._since_flag, self._episodes):
            for key in [k for k in store if partition_of(k, n_partitions) == partition]:
                del store[key]
        self._regime_pending = {k for k in self._regime_pending if partition_of(k, n_partitions) != partition}
        if self.alarm_filter is not None:
            for device in self.alarm_filter.snapshot()["devices"]:
                if partition_of(device, n_partitions) == partition:
                    self.alarm_filter.reset(device)
        self.featurizer.drop_partition(partition, n_partitions)

    # -------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "features": self.featurizer.snapshot(),
            "names": self._names,
            "board": self.board.state_dict() if self.board else None,
            "alarm_filter": self.alarm_filter.snapshot() if self.alarm_filter is not None else None,
            "since_flag": dict(self._since_flag),
            "episodes": {k: list(v) for k, v in self._episodes.items()},
            "regime_pending": sorted(self._regime_pending),
            "regime_changes": self.regime_changes,
            "held_back": self.held_back,
            "budget_counts": dict(self._budget_counts),
            "pending_n": self._pending_n,
            "pending": self._pending.state(),
            "warm": {k: list(v) for k, v in self._warm.items()},
            "warm_done": self._warm_done,
            "drift_events": self.drift_events,
            "promotions": self.promotions,
            "events_seen": self.events_seen,
            "learned_n": self._learned_n,
            "profile": self.profile.state_dict() if self.profile is not None else None,
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
        self._episodes = {k: list(v) for k, v in state.get("episodes", {}).items()}
        self._regime_pending = set(state.get("regime_pending", []))
        self.regime_changes = int(state.get("regime_changes", 0))
        self.held_back = int(state.get("held_back", 0))
        self._budget_counts = {int(k): int(v) for k, v in state.get("budget_counts", {}).items()}
        self._pending_n = int(state["pending_n"])
        self._pending = _Pending.from_state(state["pending"])
        self._warm = {k: list(v) for k, v in state["warm"].items()}
        self._warm_done = bool(state["warm_done"])
        self.drift_events = int(state["drift_events"])
        self.promotions = int(state["promotions"])
        self.events_seen = int(state["events_seen"])
        self._learned_n = int(state["learned_n"])
        if self.profile is not None and state.get("profile"):
            self.profile.load_state_dict(state["profile"])


def build_engine(config: EngineConfig) -> StreamEngine:
    """The engine of one domain, as configured."""
    needs_sequences = any(catalog.consumes(n) == "sequences" for n in config.contenders)
    if config.domain == "transactions":
        featurizer: Any = TransactionFeaturizer(config.label_delay_s,
                                                config.sequence_length if needs_sequences else 0, config.attributes)
        return StreamEngine(config, featurizer)
    if config.domain == "records":
        return StreamEngine(config, RecordFeaturizer(config.features))
    from stream_models.alarm_filter import AlarmFilter, AlarmFilterConfig

    featurizer = SensorFeaturizer(config.window, config.freeze_normalisation_after, config.drift_horizon)
    return StreamEngine(config, featurizer, alarm_filter=AlarmFilter(AlarmFilterConfig(m=config.alarm_m, n=config.alarm_n)))
