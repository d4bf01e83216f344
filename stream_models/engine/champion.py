"""Champion and challengers: several detectors score the same stream, only the champion raises alerts.

Every contender has its own threshold and learns its own way (from labels, or from the rows its own
threshold calls normal). When labels arrive, each contender's remembered score for that event joins a
rolling window from which `leaderboard()` computes ROC AUC, AP and precision/recall at its threshold.
`best_by_labels()` is the automatic promotion rule: the contender with the best average precision once
enough labelled positives were seen (a label-free champion hands over to a supervised challenger when
chargebacks start to arrive).
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("stream_models.engine")


@dataclass
class Contender:
    """One detector with its own threshold, online learner and drift monitor."""

    name: str
    detector: Any  # stream_models Detector
    consumes: str  # "rows", "windows" or "sequences" (see stream_models.catalog)
    threshold: Any  # classify_many / update_many / reset / state_dict
    learner: Any = None  # stream_models.learner.OnlineLearner feeding `detector`
    drift: Any = None  # stream_models.drift.DriftMonitor over the contender's scores
    drifts: int = 0  # drift events seen
    blind: tuple[int, ...] = ()  # feature columns this detector never sees (zeroed)

    def view(self, X: np.ndarray) -> np.ndarray:
        """The detector's input: `X` with its blind columns zeroed (the last axis holds the features)."""
        if not self.blind:
            return X
        X = X.copy()
        X[..., list(self.blind)] = 0.0
        return X

    def state_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector.state_dict(),
            "threshold": self.threshold.state_dict(),
            "learner": self.learner.state_dict() if self.learner is not None else None,
            "drift": self.drift.state_dict() if self.drift is not None else None,
            "drifts": self.drifts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.threshold.load_state_dict(state["threshold"])
        if self.learner is not None and state["learner"] is not None:
            self.learner.load_state_dict(state["learner"])
        if self.drift is not None and state["drift"] is not None:
            self.drift.load_state_dict(state["drift"])
        self.drifts = int(state["drifts"])


@dataclass
class _Remembered:
    """One scored batch of events awaiting labels; `alive` rows are still held (not rated, dropped or scored again)."""

    start: int  # sequence number of the first row
    ids: list[str]
    S: np.ndarray  # (n, K) scores per contender
    F: np.ndarray  # (n, K) flags
    ts: np.ndarray  # (n,)
    alive: np.ndarray  # (n,) bool


@dataclass
class Scored:
    scores: np.ndarray  # (B,) float64
    flags: np.ndarray  # (B,) bool
    thresholds: np.ndarray  # (B,) float64


class ChampionBoard:
    """Scores a batch with every contender; remembers scores per event id to rate contenders on labels."""

    def __init__(self, contenders: list[Contender], champion: str, memory: int = 100_000, window: int = 20_000) -> None:
        self.contenders = {c.name: c for c in contenders}
        if champion not in self.contenders:
            raise ValueError(f"champion {champion!r} is not among the contenders {sorted(self.contenders)}")
        self.champion = champion
        self.memory = memory
        self.window = window
        self._names = [c.name for c in contenders]
        # events awaiting a label, stored batch by batch (per-event Python objects cost the worker ~5 % of its time):
        # id -> sequence number of its row; rows in arrival order; `_head` is the first row still held
        self._recent: dict[str, int] = {}
        self._batches: deque[_Remembered] = deque()
        self._next_seq = 0
        self._head = 0
        self._rated: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()  # (scores, flags, labels) parts
        self._rated_n = 0

    @property
    def names(self) -> list[str]:
        """Contender names, in their fixed order (champion-independent)."""
        return list(self._names)

    @property
    def challengers(self) -> list[str]:
        return [n for n in self._names if n != self.champion]

    def score(self, inputs: dict[str, np.ndarray]) -> dict[str, Scored]:
        """Every contender scores its own input kind (`inputs[contender.consumes]`)."""
        out = {}
        for name in self._names:
            c = self.contenders[name]
            scores = np.asarray(c.detector.score_many(c.view(inputs[c.consumes])), dtype=np.float64)
            flags = np.asarray(c.threshold.classify_many(scores), dtype=bool)
            out[name] = Scored(scores, flags, np.full(len(scores), float(c.threshold.threshold)))
        return out

    def remember(self, event_ids: list[str], ts: np.ndarray, scored: dict[str, Scored]) -> None:
        if self.memory <= 0 or not event_ids:
            return
        n, seq = len(event_ids), self._next_seq
        S = np.stack([scored[name].scores for name in self._names], axis=1)  # (B, K)
        Fl = np.stack([scored[name].flags for name in self._names], axis=1)  # (B, K)
        batch = _Remembered(seq, list(event_ids), S, Fl, np.asarray(ts, np.float64), np.ones(n, bool))
        self._batches.append(batch)
        self._next_seq += n
        if self._recent.keys().isdisjoint(event_ids) and len(set(event_ids)) == n:
            self._recent.update(zip(event_ids, range(seq, seq + n), strict=True))
        else:  # an event scored again: only its latest row waits for its label
            for i, event_id in enumerate(event_ids):
                old = self._recent.get(event_id)
                if old is not None:
                    held, row = self._row(old)
                    held.alive[row] = False
                self._recent[event_id] = seq + i
        if len(self._recent) > self.memory:
            self._drop_front(excess=len(self._recent) - self.memory)

    def expire(self, now_ts: float, label_delay_s: float) -> None:
        """Events older than the label delay without a fraud label count as genuine."""
        self._drop_front(now_ts=now_ts, label_delay_s=label_delay_s)

    def _drop_front(self, *, excess: int = 0, now_ts: float | None = None, label_delay_s: float = 0.0) -> None:
        """Forget the oldest held events: `excess` of them (unrated), or, given `now_ts`, those up to the first one
        whose label delay has not passed (rated genuine)."""
        while self._batches:
            b = self._batches[0]
            h = self._head - b.start
            alive = b.alive[h:]
            if now_ts is not None:
                # up to (not including) the first held row whose label may still come
                stop = np.flatnonzero(alive & (b.ts[h:] + label_delay_s > now_ts))
            else:
                stop = np.flatnonzero(np.cumsum(alive) > excess)
            end = h + (int(stop[0]) if len(stop) else len(alive))
            gone = h + np.flatnonzero(b.alive[h:end])
            if len(gone):
                for i in gone.tolist():
                    del self._recent[b.ids[i]]
                if now_ts is not None:
                    self._rate(b.S[gone], b.F[gone], np.zeros(len(gone), np.int64))
                excess -= len(gone)
            self._head = b.start + end
            if end < len(b.ids):
                break
            self._batches.popleft()
        if not self._batches:
            self._head = self._next_seq

    def _row(self, seq: int) -> tuple[_Remembered, int]:
        """The held batch and row of sequence number `seq`."""
        k = bisect.bisect_right(self._batches, seq, key=lambda held: held.start) - 1
        return self._batches[k], seq - self._batches[k].start

    def _rate(self, S: np.ndarray, F: np.ndarray, y: np.ndarray) -> None:
        """Rated rows join the rolling window of the last `window` ones."""
        self._rated.append((S, F, y))
        self._rated_n += len(y)
        while self._rated_n - len(self._rated[0][2]) >= self.window:
            self._rated_n -= len(self._rated.popleft()[2])
        if self._rated_n > self.window:
            cut = self._rated_n - self.window
            S0, F0, y0 = self._rated[0]
            self._rated[0] = (S0[cut:], F0[cut:], y0[cut:])
            self._rated_n = self.window

    def _rated_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores (N, K), flags (N, K), labels (N,)) of the rated window, oldest first."""
        K = len(self._names)
        if not self._rated:
            return np.zeros((0, K)), np.zeros((0, K), bool), np.zeros(0, np.int64)
        return tuple(np.concatenate([part[j] for part in self._rated]) for j in range(3))  # type: ignore[return-value]

    def observe_labels(self, event_ids: list[str], labels: list[int]) -> int:
        """Rate every contender on the labelled events it scored; returns how many matched."""
        rows: list[tuple[np.ndarray, np.ndarray, int]] = []
        for event_id, label in zip(event_ids, labels, strict=True):
            seq = self._recent.pop(event_id, None)
            if seq is not None:
                b, i = self._row(seq)
                b.alive[i] = False
                rows.append((b.S[i], b.F[i], int(label)))
        if rows:
            self._rate(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                       np.array([r[2] for r in rows], np.int64))
        return len(rows)

    def leaderboard(self) -> list[dict[str, Any]]:
        """Rolling metrics per contender over the last labelled events."""
        from sklearn.metrics import average_precision_score, roc_auc_score

        from evaluation.metrics import precision_recall

        rows = []
        S, F, y = self._rated_arrays()
        for k, name in enumerate(self._names):
            row: dict[str, Any] = {"detector": name, "champion": name == self.champion, "labelled": int(len(y)),
                                   "drifts": self.contenders[name].drifts}
            if len(y):
                s, f = S[:, k], F[:, k]
                precision, recall = precision_recall(y, f)
                row.update(positives=int(y.sum()), alerts=int(f.sum()), precision=precision, recall=recall)
                if 0 < y.sum() < len(y) and np.isfinite(s).all():
                    row.update(roc_auc=float(roc_auc_score(y, s)), average_precision=float(average_precision_score(y, s)))
            rows.append(row)
        return rows

    def best_by_labels(self, min_positives: int, margin: float, eligible: Iterable[str] | None = None) -> str | None:
        """The contender whose average precision on the rated events beats the champion's by `margin`
        (None while fewer than `min_positives` labelled positives were rated, or when none does). Only the
        `eligible` contenders (default: all) may be promoted."""
        S, _, y = self._rated_arrays()
        if len(self._names) < 2 or int(y.sum()) < min_positives or y.sum() == len(y):
            return None
        from sklearn.metrics import average_precision_score

        ap = {n: float(average_precision_score(y, S[:, k])) if np.isfinite(S[:, k]).all() else -1.0
              for k, n in enumerate(self._names)}
        allowed = set(self._names if eligible is None else eligible) | {self.champion}
        best = max((n for n in self._names if n in allowed), key=lambda n: ap[n])
        return best if best != self.champion and ap[best] > ap[self.champion] + margin else None

    def promote(self, name: str) -> None:
        if name not in self.contenders:
            raise ValueError(f"cannot promote {name!r}: contenders are {sorted(self.contenders)}")
        if name != self.champion:
            log.info("champion promoted", extra={"old": self.champion, "new": name})
        self.champion = name

    def state_dict(self) -> dict[str, Any]:
        starts = [max(self._head - b.start, 0) for b in self._batches]
        held = [(b, h + np.flatnonzero(b.alive[h:])) for b, h in zip(self._batches, starts, strict=True)]
        rated_scores, rated_flags, rated_labels = self._rated_arrays()
        return {
            "champion": self.champion,
            "contenders": {n: c.state_dict() for n, c in self.contenders.items()},
            "recent_ids": [b.ids[i] for b, rows in held for i in rows.tolist()],
            "recent_scores": np.concatenate([b.S[rows] for b, rows in held] or [np.zeros((0, len(self._names)))]),
            "recent_flags": np.concatenate([b.F[rows] for b, rows in held] or [np.zeros((0, len(self._names)), bool)]),
            "recent_ts": np.concatenate([b.ts[rows] for b, rows in held] or [np.zeros(0)]),
            "rated_scores": rated_scores, "rated_flags": rated_flags, "rated_labels": rated_labels,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in state["contenders"].items():
            if name in self.contenders:
                self.contenders[name].load_state_dict(part)
        if state["champion"] in self.contenders:
            self.champion = state["champion"]
        ids = list(state["recent_ids"])
        self._recent, self._batches, self._head, self._next_seq = {}, deque(), 0, 0
        if ids:
            self._recent = dict(zip(ids, range(len(ids)), strict=True))
            self._batches.append(_Remembered(0, ids, np.asarray(state["recent_scores"]),
                                             np.asarray(state["recent_flags"], bool),
                                             np.asarray(state["recent_ts"], np.float64), np.ones(len(ids), bool)))
            self._next_seq = len(ids)
        self._rated.clear()
        self._rated_n = 0
        if "rated" in state:  # a list of triples, before session 9
            rated = list(state["rated"])
            if rated:
                self._rate(np.stack([np.asarray(r[0]) for r in rated]), np.stack([np.asarray(r[1]) for r in rated]),
                           np.array([int(r[2]) for r in rated], np.int64))
        elif len(state["rated_labels"]):
            self._rate(np.asarray(state["rated_scores"]), np.asarray(state["rated_flags"], bool),
                       np.asarray(state["rated_labels"], np.int64))
