"""Champion and challengers: several detectors score the same stream, only the champion raises alerts.

Every contender has its own threshold and learns its own way (from labels, or from the rows its own
threshold calls normal). When labels arrive, each contender's remembered score for that event joins a
rolling window from which `leaderboard()` computes ROC AUC, AP and precision/recall at its threshold.
`best_by_labels()` is the automatic promotion rule: the contender with the best average precision once
enough labelled positives were seen (a label-free champion hands over to a supervised challenger when
chargebacks start to arrive).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
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
        self._names = [c.name for c in contenders]
        self._recent: OrderedDict[str, tuple[np.ndarray, np.ndarray, float]] = OrderedDict()  # id -> (scores, flags, ts)
        self._rated: deque[tuple[np.ndarray, np.ndarray, int]] = deque(maxlen=window)

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
        S = np.stack([scored[n].scores for n in self._names], axis=1)  # (B, K)
        Fl = np.stack([scored[n].flags for n in self._names], axis=1)  # (B, K)
        for i, event_id in enumerate(event_ids):
            self._recent[event_id] = (S[i], Fl[i], float(ts[i]))
        while len(self._recent) > self.memory:
            self._recent.popitem(last=False)

    def expire(self, now_ts: float, label_delay_s: float) -> None:
        """Events older than the label delay without a fraud label count as genuine."""
        while self._recent:
            event_id, (s, f, ts) = next(iter(self._recent.items()))
            if ts + label_delay_s > now_ts:
                break
            self._recent.popitem(last=False)
            self._rated.append((s, f, 0))

    def observe_labels(self, event_ids: list[str], labels: list[int]) -> int:
        """Rate every contender on the labelled events it scored; returns how many matched."""
        matched = 0
        for event_id, label in zip(event_ids, labels, strict=True):
            hit = self._recent.pop(event_id, None)
            if hit is not None:
                self._rated.append((hit[0], hit[1], int(label)))
                matched += 1
        return matched

    def leaderboard(self) -> list[dict[str, Any]]:
        """Rolling metrics per contender over the last labelled events."""
        from sklearn.metrics import average_precision_score, roc_auc_score

        from evaluation.metrics import precision_recall

        rows = []
        y = np.array([r[2] for r in self._rated], dtype=int)
        for k, name in enumerate(self._names):
            row: dict[str, Any] = {"detector": name, "champion": name == self.champion, "labelled": int(len(y)),
                                   "drifts": self.contenders[name].drifts}
            if len(y):
                s = np.array([r[0][k] for r in self._rated])
                f = np.array([r[1][k] for r in self._rated], dtype=bool)
                precision, recall = precision_recall(y, f)
                row.update(positives=int(y.sum()), alerts=int(f.sum()), precision=precision, recall=recall)
                if 0 < y.sum() < len(y) and np.isfinite(s).all():
                    row.update(roc_auc=float(roc_auc_score(y, s)), average_precision=float(average_precision_score(y, s)))
            rows.append(row)
        return rows

    def best_by_labels(self, min_positives: int, margin: float) -> str | None:
        """The contender whose average precision on the rated events beats the champion's by `margin`
        (None while fewer than `min_positives` labelled positives were rated, or when none does)."""
        y = np.array([r[2] for r in self._rated], dtype=int)
        if len(self._names) < 2 or int(y.sum()) < min_positives or y.sum() == len(y):
            return None
        from sklearn.metrics import average_precision_score

        S = np.stack([r[0] for r in self._rated])  # (N, K)
        ap = {n: float(average_precision_score(y, S[:, k])) if np.isfinite(S[:, k]).all() else -1.0
              for k, n in enumerate(self._names)}
        best = max(self._names, key=lambda n: ap[n])
        return best if best != self.champion and ap[best] > ap[self.champion] + margin else None

    def promote(self, name: str) -> None:
        if name not in self.contenders:
            raise ValueError(f"cannot promote {name!r}: contenders are {sorted(self.contenders)}")
        if name != self.champion:
            log.info("champion promoted", extra={"old": self.champion, "new": name})
        self.champion = name

    def state_dict(self) -> dict[str, Any]:
        ids = list(self._recent)
        return {
            "champion": self.champion,
            "contenders": {n: c.state_dict() for n, c in self.contenders.items()},
            "recent_ids": ids,
            "recent_scores": np.stack([v[0] for v in self._recent.values()]) if ids else np.zeros((0, len(self._names))),
            "recent_flags": np.stack([v[1] for v in self._recent.values()]) if ids else np.zeros((0, len(self._names)), bool),
            "recent_ts": np.array([v[2] for v in self._recent.values()], dtype=np.float64),
            # stacked: 20,000 (scores, flags) pairs pickled one by one cost a worker's checkpoint ~0.5 s
            "rated_scores": np.stack([r[0] for r in self._rated]) if self._rated else np.zeros((0, len(self._names))),
            "rated_flags": np.stack([r[1] for r in self._rated]) if self._rated else np.zeros((0, len(self._names)), bool),
            "rated_labels": np.array([r[2] for r in self._rated], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in state["contenders"].items():
            if name in self.contenders:
                self.contenders[name].load_state_dict(part)
        if state["champion"] in self.contenders:
            self.champion = state["champion"]
        self._recent = OrderedDict(
            (i, (s, f, float(t)))
            for i, s, f, t in zip(state["recent_ids"], state["recent_scores"], state["recent_flags"], state["recent_ts"],
                                  strict=True)
        )
        self._rated.clear()
        rated = state["rated"] if "rated" in state else zip(  # "rated": a list of triples, before session 9
            state["rated_scores"], state["rated_flags"], state["rated_labels"].tolist(), strict=True)
        self._rated.extend((np.asarray(s), np.asarray(f), int(y)) for s, f, y in rated)
