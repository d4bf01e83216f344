"""Backtest metrics, plots and the HTML report, from the per-event score table.

The score table (see `evaluation.score_log`) has one row per event: domain, event_id, entity,
ts (event time, epoch s), score (NaN when the event could not be scored yet), threshold, alert
(bool: the alert users receive), suppressed, warming_up (bool), partition, offset, detector (the
champion's name), label (0/1, NaN when unknown), and per challenger `score__<name>` /
`alert__<name>` (optionally `threshold__<name>`). Only domain, event_id, entity, ts, score,
threshold and alert are required; a missing warming_up means no warm-up, a missing label means
unlabelled, a missing detector means "champion".

Every metric comes from `evaluation.metrics` (one implementation each). What is measured:

- the events of the evaluation window [evaluate_from, evaluate_to) (all events by default),
- minus, per period, the entities known to be compromised at the period's start when
  `known_entity_days` is set (the Fraud Detection Handbook's rule),
- overall (every event of that set) and after warm-up (its events with warming_up == False),
- per period (day or week) after warm-up.

>>> import numpy as np, pandas as pd
>>> frame = pd.DataFrame({"domain": "transactions", "event_id": ["a", "b", "c", "d"], "entity": ["x", "x", "y", "z"],
...                       "ts": [0.0, 3600.0, 7200.0, 10800.0], "score": [0.1, 0.9, 0.8, 0.2],
...                       "threshold": 0.5, "alert": [False, True, True, False], "label": [0, 1, 0, 0],
...                       "warming_up": [True, False, False, False]})
>>> [round(m.precision, 2) for m in all_metrics(frame, k=1)], all_metrics(frame, k=1, after_warmup=True)[0].events
([0.5], 3)
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import metrics as M

__all__ = [
    "DEFINITIONS",
    "SCORE_COLUMNS",
    "Contender",
    "DetectorMetrics",
    "all_metrics",
    "contenders",
    "detector_metrics",
    "evaluation_frame",
    "period_metrics",
    "resolve_period",
    "warmup_summary",
    "thinned",
    "write_report",
]

SCORE_COLUMNS = ["domain", "event_id", "entity", "ts", "score", "threshold", "alert", "suppressed", "warming_up",
                 "partition", "offset", "detector", "label"]
REQUIRED_COLUMNS = ["domain", "event_id", "entity", "ts", "score", "threshold", "alert"]
DAY = M.DAY
WEEK = 7 * DAY
PERIODS = {"day": DAY, "week": WEEK}
AUTO_WEEK_AFTER_DAYS = 21.0  # period=None: weeks when the evaluated span is longer than this, else days
MAX_ALERT_ROWS = 200
MAX_TIMELINE_POINTS = 4000  # per series; more are thinned (see `thinned`)

DEFINITIONS: dict[str, str] = {
    "precision": "Share of alerts that were real frauds/anomalies: TP / (TP + FP).",
    "recall": "Share of real frauds/anomalies (labelled positive events) that raised an alert: TP / (TP + FN).",
    "F1": "Harmonic mean of precision and recall: TP / (TP + (FP + FN) / 2).",
    "FAR": "False alarm rate: % of genuine (negative) events that raised an alert, 100 · FP / (FP + TN).",
    "MAR": "Missed alarm rate: % of positive events that raised no alert, 100 · FN / (FN + TP).",
    "alerts/hour": "Alerts per hour of event time over the evaluated events' time span.",
    "detection delay": "Median time from the start of an anomaly (transactions: a card's first fraud; sensors: "
                       "each run of positive events) to its first alert, over the anomalies that were detected.",
    "AUC": "ROC AUC: probability that a random positive event scores higher than a random negative one "
           "(0.5 = chance, 1 = perfect ranking); threshold-free.",
    "AP": "Average precision: area under the precision-recall curve of the scores; threshold-free, and unlike "
          "AUC sensitive to rare positives (chance level = share of positives).",
    "CP@k": "Card Precision@k (Fraud Detection Handbook): per day, the share of compromised cards among the k cards "
            "with the highest score (divided by k), averaged over days; cards already found are dropped.",
    "NAB": "Numenta Anomaly Benchmark score (SKAB's version): rewards the first alert in a window after each "
           "changepoint, earlier is better, penalises alerts outside windows; 100 = perfect, 0 = no alerts.",
    "warm-up": "Events scored before the champion's threshold was armed (or before the event could be scored); "
               "'after warm-up' metrics leave them out.",
}


@dataclass
class DetectorMetrics:
    """Quality of one detector on one domain (on the events of the frame it was computed from)."""

    domain: str
    detector: str
    events: int = 0
    scored: int = 0  # events with a finite score
    labelled: int = 0  # events with a known label
    ranked: int = 0  # labelled events with a finite score: the rows of ROC AUC, AP and CP@k
    positives: int = 0
    alerts: int = 0
    roc_auc: float | None = None
    average_precision: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    far_pct: float | None = None  # false alarm rate, % of negatives flagged
    mar_pct: float | None = None  # missed alarm rate, % of positives missed
    alerts_per_hour: float | None = None
    detection_delay_s: float | None = None  # median over detected anomalies
    detected_segments: int = 0  # anomalies with an alert (transactions: compromised cards; sensors: runs)
    anomalous_segments: int = 0  # anomalies
    extra: dict[str, float | None] = field(default_factory=dict)  # NAB, Card Precision@k

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


@dataclass(frozen=True)
class Contender:
    """A detector's columns in the score table."""

    name: str
    score_col: str
    alert_col: str
    threshold_col: str | None
    champion: bool


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "detector"


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"score table lacks column(s) {missing}")


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with the optional columns filled in and a fresh 0..n-1 index."""
    _check_columns(frame)
    out = frame.reset_index(drop=True).copy()
    if "warming_up" not in out:
        out["warming_up"] = False
    out["warming_up"] = out["warming_up"].fillna(False).astype(bool)
    if "label" not in out:
        out["label"] = np.nan
    out["label"] = pd.to_numeric(out["label"], errors="coerce").astype(float)
    out["alert"] = out["alert"].fillna(False).astype(bool)
    out["ts"] = out["ts"].astype(float)
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype(float)
    return out


def contenders(part: pd.DataFrame) -> list[Contender]:
    """What users were served (columns score/alert/threshold: the champion of each event) and every other
    contender with a score (`score__<name>`). After a promotion the served series is named after both
    champions ("served: a -> b") and each contender keeps its own whole series."""
    served = list(pd.unique(part["detector"].astype(str))) if "detector" in part and len(part) else ["champion"]
    names = [c.removeprefix("score__") for c in part.columns if c.startswith("score__") and part[c].notna().any()]
    if len(served) == 1:
        out = [Contender(served[0], "score", "alert", "threshold", True)]
        names = [n for n in names if n != served[0]]
    else:
        out = [Contender("served: " + " -> ".join(served), "score", "alert", "threshold", True)]
    for name in names:
        threshold = f"threshold__{name}"
        out.append(Contender(name, f"score__{name}", f"alert__{name}", threshold if threshold in part else None,
                             False))
    return out


# ------------------------------------------------------------------------------ metrics of one frame
def detector_metrics(
    frame: pd.DataFrame, domain: str, detector: str, score_col: str = "score", alert_col: str = "alert", k: int = 100
) -> DetectorMetrics:
    """Ranking metrics on labelled, scored rows; operating-point metrics of the alert flags on all labelled
    rows (an event that could not be scored raised no alert: a positive one counts as missed)."""
    m = DetectorMetrics(domain=domain, detector=detector, events=len(frame))
    if frame.empty:
        return m
    scores = pd.to_numeric(frame[score_col], errors="coerce").to_numpy(dtype=float)
    flags = frame[alert_col].fillna(False).to_numpy(dtype=bool) if alert_col in frame else np.zeros(len(frame), bool)
    ts = frame["ts"].to_numpy(dtype=float)
    m.scored = int(np.isfinite(scores).sum())
    m.alerts = int(flags.sum())
    lo, hi = float(np.nanmin(ts)), float(np.nanmax(ts))
    if hi > lo:
        m.alerts_per_hour = _finite(M.alerts_per_hour(ts[flags], lo, float(np.nextafter(hi, math.inf))))
    label = frame["label"].to_numpy(dtype=float) if "label" in frame else np.full(len(frame), np.nan)
    known = ~np.isnan(label)
    m.labelled = int(known.sum())
    if not m.labelled:
        return m
    y = label[known].astype(int)
    m.positives = int(y.sum())
    c = M.confusion(y, flags[known])
    m.tp, m.fp, m.tn, m.fn = c
    r = M.rates(c)
    m.precision, m.recall, m.f1 = r["precision"], r["recall"], r["f1"]
    m.far_pct, m.mar_pct = _pct(r["far"]), _pct(r["mar"])

    ranked = known & np.isfinite(scores)
    m.ranked = int(ranked.sum())
    y_r, s_r = label[ranked].astype(int), scores[ranked]
    m.roc_auc = _finite(M.roc_auc(y_r, s_r)) if m.ranked else None
    m.average_precision = _finite(M.average_precision(y_r, s_r)) if m.ranked else None

    delays = M.detection_delay(frame["entity"].to_numpy()[known], ts[known], y, flags[known],
                               segments=domain != "transactions")
    m.anomalous_segments = len(delays)
    detected = delays["delay_s"].dropna()
    m.detected_segments = len(detected)
    m.detection_delay_s = _finite(float(np.median(detected))) if len(detected) else None

    if domain == "transactions":
        rows = pd.DataFrame({"day": (ts[ranked] // DAY).astype(np.int64), "entity": frame["entity"].to_numpy()[ranked],
                             "label": y_r, "score": s_r})
        m.extra[f"card_precision@{k}"] = _finite(M.card_precision_at_k(
            rows, k, day_col="day", card_col="entity", label_col="label", score_col="score")) if len(rows) else None
    else:
        m.extra.update(_nab(frame, alert_col))
    return m


def _nab(frame: pd.DataFrame, alert_col: str) -> dict[str, float | None]:
    """NAB (standard / LowFP / LowFN) with each entity as one file; true changepoints = label rises."""
    from evaluation.nab import changepoints_from_alarms, nab_scores

    times, true_cp, pred_cp = [], [], []
    for _, group in frame.sort_values("ts", kind="stable").groupby("entity"):
        labels = group["label"].fillna(0).to_numpy(dtype=int)
        if "changepoint" in group:
            cp = group["changepoint"].fillna(0).to_numpy(dtype=int)
        else:
            cp = np.diff(labels, prepend=0) == 1
        times.append(pd.to_datetime(group["ts"].to_numpy(), unit="s").to_numpy())
        true_cp.append(np.asarray(cp, dtype=int))
        pred_cp.append(changepoints_from_alarms(group[alert_col].fillna(False).to_numpy(dtype=int)))
    if not any(c.any() for c in true_cp):
        return {}
    scores = nab_scores(times, true_cp, pred_cp)
    return {"nab_standard": scores.standard, "nab_low_fp": scores.low_fp, "nab_low_fn": scores.low_fn}


# ------------------------------------------------------------------------------ what is evaluated
@dataclass(frozen=True)
class _Protocol:
    evaluate_from: float | None = None
    evaluate_to: float | None = None
    known_entity_days: float | None = None
    label_delay_s: float = 0.0
    period: str | None = None


def resolve_period(frame: pd.DataFrame, period: str | None = None, *, evaluate_from: float | None = None,
                   evaluate_to: float | None = None) -> str:
    """"day" or "week"; None picks weeks when the evaluated events span more than 21 days, else days."""
    if period is not None:
        if period not in PERIODS:
            raise ValueError(f"period must be 'day', 'week' or None, got {period!r}")
        return period
    ts = frame["ts"].to_numpy(dtype=float) if len(frame) else np.array([])
    ts = ts[_window_mask(ts, evaluate_from, evaluate_to) & np.isfinite(ts)]
    span = float(ts.max() - ts.min()) if ts.size else 0.0
    return "week" if span > AUTO_WEEK_AFTER_DAYS * DAY else "day"


def _window_mask(ts: np.ndarray, start: float | None, stop: float | None) -> np.ndarray:
    mask = np.ones(len(ts), bool)
    if start is not None:
        mask &= ts >= start
    if stop is not None:
        mask &= ts < stop
    return mask


def _marked(frame: pd.DataFrame, p: _Protocol) -> tuple[pd.DataFrame, str]:
    """The prepared frame with columns _in_window, _known (removed by the known-entity rule), period_start."""
    out = _prepared(frame)
    ts = out["ts"].to_numpy(dtype=float)
    in_window = _window_mask(ts, p.evaluate_from, p.evaluate_to) & np.isfinite(ts)
    period = resolve_period(out, p.period, evaluate_from=p.evaluate_from, evaluate_to=p.evaluate_to)
    length = PERIODS[period]
    if p.evaluate_from is not None:
        origin = float(p.evaluate_from)
    elif in_window.any():
        origin = math.floor(float(ts[in_window].min()) / DAY) * DAY  # UTC midnight of the first day
    else:
        origin = 0.0
    out["period_start"] = origin + np.floor((ts - origin) / length) * length
    out["_in_window"] = in_window
    known = np.zeros(len(out), bool)
    if p.known_entity_days is not None:
        lookback = float(p.known_entity_days) * DAY
        for _, part in out.groupby("domain", sort=False):
            frauds = part[part["label"] == 1]  # every revealed fraud, also before the evaluation window
            if frauds.empty:
                continue
            evaluated = part[part["_in_window"]]
            for start, rows in evaluated.groupby("period_start", sort=True):
                # revealed (ts + label delay) in [start - lookback, start)
                cards = M.compromised_between(frauds, start - lookback - p.label_delay_s, start - p.label_delay_s,
                                              time_col="ts", card_col="entity", label_col="label")
                if cards:
                    known[rows.index[rows["entity"].isin(cards)]] = True
    out["_known"] = known
    return out, period


def evaluation_frame(frame: pd.DataFrame, *, evaluate_from: float | None = None, evaluate_to: float | None = None,
                     known_entity_days: float | None = None, label_delay_s: float = 0.0,
                     period: str | None = None, after_warmup: bool = False) -> pd.DataFrame:
    """The rows the metrics score, with a `period_start` column: events in [evaluate_from, evaluate_to),
    minus, per period, the entities with a fraud revealed (ts + label_delay_s) in the `known_entity_days`
    before the period's start; without warm-up events when `after_warmup`."""
    marked, _ = _marked(frame, _Protocol(evaluate_from, evaluate_to, known_entity_days, label_delay_s, period))
    return _selected(marked, after_warmup)


def _selected(marked: pd.DataFrame, after_warmup: bool) -> pd.DataFrame:
    keep = marked["_in_window"] & ~marked["_known"]
    if after_warmup:
        keep &= ~marked["warming_up"]
    return marked[keep].drop(columns=["_in_window", "_known"])


def _metrics_of(selected: pd.DataFrame, full: pd.DataFrame, k: int) -> list[DetectorMetrics]:
    results = []
    for domain, part in full.groupby("domain", sort=True):
        rows = selected[selected["domain"] == domain]
        for c in contenders(part):
            results.append(detector_metrics(rows, str(domain), c.name, c.score_col, c.alert_col, k=k))
    return results


def all_metrics(frame: pd.DataFrame, k: int = 100, *, after_warmup: bool = False,
                evaluate_from: float | None = None, evaluate_to: float | None = None,
                known_entity_days: float | None = None, label_delay_s: float = 0.0,
                period: str | None = None) -> list[DetectorMetrics]:
    """Champion and challenger metrics for each domain, on the evaluated events (see `evaluation_frame`)."""
    p = _Protocol(evaluate_from, evaluate_to, known_entity_days, label_delay_s, period)
    marked, _ = _marked(frame, p)
    return _metrics_of(_selected(marked, after_warmup), marked, k)


PERIOD_FIELDS = ("events", "positives", "alerts", "precision", "recall", "f1", "roc_auc", "average_precision")


def _period_rows(marked: pd.DataFrame, period: str, k: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    length = PERIODS[period]
    windowed = marked[marked["_in_window"]]
    for domain, part in marked.groupby("domain", sort=True):
        found = contenders(part)
        in_domain = windowed[windowed["domain"] == domain]
        extra_key = f"card_precision@{k}" if domain == "transactions" else "nab_standard"
        for start, rows_p in in_domain.groupby("period_start", sort=True):
            evaluated = rows_p[~rows_p["_known"] & ~rows_p["warming_up"]]
            for c in found:
                m = detector_metrics(evaluated, str(domain), c.name, c.score_col, c.alert_col, k=k)
                row: dict[str, Any] = {
                    "domain": str(domain), "detector": c.name, "champion": c.champion,
                    "period": _period_label(float(start)), "period_start": float(start),
                    "period_end": float(start) + length,
                    "warm_up_events": int((~rows_p["_known"] & rows_p["warming_up"]).sum()),
                    "known_removed": int(rows_p["_known"].sum()),
                }
                row.update({f: getattr(m, f) for f in PERIOD_FIELDS})
                row[extra_key] = m.extra.get(extra_key)
                rows.append(row)
    return rows


def period_metrics(frame: pd.DataFrame, k: int = 100, *, period: str | None = None,
                   evaluate_from: float | None = None, evaluate_to: float | None = None,
                   known_entity_days: float | None = None, label_delay_s: float = 0.0) -> list[dict[str, Any]]:
    """One row per domain, period and detector, on the evaluated events after warm-up: domain, detector,
    champion, period (start date, UTC), period_start, period_end, warm_up_events (left out),
    known_removed (left out by the known-entity rule), events, positives, alerts, precision, recall, f1,
    roc_auc, average_precision (None where undefined), and card_precision@k (transactions) or
    nab_standard (sensors)."""
    p = _Protocol(evaluate_from, evaluate_to, known_entity_days, label_delay_s, period)
    marked, resolved = _marked(frame, p)
    return _period_rows(marked, resolved, k)


def _period_label(start: float) -> str:
    t = pd.Timestamp(start, unit="s", tz="UTC")
    return t.strftime("%Y-%m-%d") if start % DAY == 0 else t.strftime("%Y-%m-%d %H:%M")


def _iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    return pd.Timestamp(ts, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def warmup_summary(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per domain: events, warm_up_events, and the first/last event time of the warm-up rows (epoch s and ISO)."""
    _check_columns(frame)
    warming_up = frame["warming_up"].fillna(False).astype(bool) if "warming_up" in frame else False
    columns = pd.DataFrame({"domain": frame["domain"], "ts": frame["ts"].astype(float), "warming_up": warming_up})
    out = []
    for domain, part in columns.groupby("domain", sort=True):
        warm = part.loc[part["warming_up"], "ts"]
        first = _finite(warm.min()) if len(warm) else None
        last = _finite(warm.max()) if len(warm) else None
        out.append({"domain": str(domain), "events": len(part), "warm_up_events": len(warm),
                    "warm_up_first_ts": first, "warm_up_last_ts": last,
                    "warm_up_first": _iso(first), "warm_up_last": _iso(last)})
    return out


# ---------------------------------------------------------------------------------------- plots
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _times(values: Any) -> np.ndarray:
    """Epoch seconds as datetime64 (a numpy array: matplotlib converts it at once, a pandas index value by value)."""
    return pd.to_datetime(np.asarray(values, dtype=float), unit="s").to_numpy()


def thinned(ts: np.ndarray, values: np.ndarray, max_points: int = MAX_TIMELINE_POINTS) -> np.ndarray:
    """Row indices to draw, in row order: all of them when there are at most `max_points`; else, per time bin
    (max_points // 2 bins), the rows with the lowest and the highest value, so every spike stays visible.

    >>> thinned(np.arange(10.0), np.arange(10.0), max_points=20).tolist() == list(range(10))
    True
    >>> thinned(np.arange(8.0), np.array([0, 9, 1, 2, 3, 8, 4, 5.0]), max_points=4).tolist()
    [0, 1, 4, 5]
    """
    n = len(ts)
    if n <= max_points:
        return np.arange(n)
    bins = max(1, max_points // 2)
    lo, hi = float(np.min(ts)), float(np.max(ts))
    b = np.minimum(((ts - lo) / ((hi - lo) or 1.0) * bins).astype(np.int64), bins - 1)
    order = np.lexsort((values, b))  # by bin, then value
    sb = b[order]
    edge = sb[1:] != sb[:-1]
    first, last = np.r_[True, edge], np.r_[edge, True]
    return np.unique(np.concatenate([order[first], order[last]]))


COLD_START_RULES = ("card_profile", "reading_profile")  # stream_models' profiles: they alert from the first events


def _timeline(part: pd.DataFrame, domain: str, c: Contender, path: Path) -> Path:
    plt = _plt()
    scores = part[c.score_col].to_numpy(dtype=float)
    finite = np.isfinite(scores)
    scored, s = part[finite], scores[finite]
    # `warming_up` is the served champion's state: another contender's points are not drawn as warm-up
    warm = scored["warming_up"].to_numpy(dtype=bool) if c.champion else np.zeros(len(scored), bool)
    ts = scored["ts"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    thin = False
    for mask, color, label in ((~warm, "tab:blue", "score"), (warm, "tab:grey", "score (warm-up)")):
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        keep = rows[thinned(ts[rows], s[rows])]
        thin |= len(keep) < len(rows)
        ax.scatter(_times(ts[keep]), s[keep], s=2, color=color, alpha=0.5, label=label)
    if c.threshold_col is not None and c.threshold_col in scored:
        th = scored[c.threshold_col].to_numpy(dtype=float)
        # one line per partition: the partitions of a live run interleave at different event times
        part_of = scored["partition"].to_numpy() if "partition" in scored else np.zeros(len(scored))
        for i, p in enumerate(pd.unique(part_of)):
            rows = np.flatnonzero(part_of == p)
            keep = rows[thinned(ts[rows], th[rows])]
            ax.plot(_times(ts[keep]), th[keep], color="tab:orange", lw=1, label=None if i else "threshold")
    if c.alert_col in scored:
        flagged = scored[scored[c.alert_col].fillna(False).astype(bool)]
        ax.scatter(_times(flagged["ts"]), flagged[c.score_col], marker="x", color="tab:red", s=18, label="alert")
    positive = scored[scored["label"] == 1]
    if len(positive):
        ax.scatter(_times(positive["ts"]), positive[c.score_col], facecolors="none", edgecolors="tab:green", s=28,
                   label="labelled positive")
    ax.set_yscale("symlog")
    role = "champion" if c.champion else "cold-start rule" if c.name in COLD_START_RULES else "challenger"
    note = "; per time bin, the lowest and highest score drawn" if thin else ""
    ax.set_title(f"{domain} / {c.name} ({role}): score over event time{note}")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _pr_roc(evaluated: pd.DataFrame, domain: str, found: Sequence[Contender], path: Path) -> Path | None:
    curves = []
    for c in found:
        s = evaluated[c.score_col].to_numpy(dtype=float)
        y = evaluated["label"].to_numpy(dtype=float)
        ok = np.isfinite(s) & ~np.isnan(y)
        y_i, s_i = y[ok].astype(int), s[ok]
        if 0 < y_i.sum() < len(y_i):
            curves.append((c, y_i, s_i))
    if not curves:  # unlabelled: no curves, and no sklearn import
        return None
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for c, y_i, s_i in curves:
        precision, recall, _ = precision_recall_curve(y_i, s_i)
        axes[0].plot(recall, precision, label=f"{c.name} (AP {M.average_precision(y_i, s_i):.3f})")
        fpr, tpr, _ = roc_curve(y_i, s_i)
        axes[1].plot(fpr, tpr, label=f"{c.name} (AUC {M.roc_auc(y_i, s_i):.3f})")
    axes[0].set(xlabel="recall", ylabel="precision", title=f"{domain}: precision-recall (after warm-up)")
    axes[1].plot([0, 1], [0, 1], ls="--", color="grey")
    axes[1].set(xlabel="false positive rate", ylabel="true positive rate", title=f"{domain}: ROC (after warm-up)")
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _top_entities(part: pd.DataFrame, domain: str, c: Contender, path: Path, top: int = 4) -> Path | None:
    if c.alert_col not in part:
        return None
    flagged = part[part[c.alert_col].fillna(False).astype(bool)]
    entities = flagged.groupby("entity")[c.score_col].max().nlargest(top).index
    if not len(entities):
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(entities), 1, figsize=(11, 2.2 * len(entities)), squeeze=False)
    by_entity = dict(tuple(part[part["entity"].isin(entities)].groupby("entity", sort=False)))
    for ax, entity in zip(axes[:, 0], entities, strict=True):
        rows = by_entity[entity]
        rt = _times(rows["ts"])
        ax.plot(rt, rows[c.score_col], lw=1, marker=".", ms=3)
        if c.threshold_col is not None and c.threshold_col in rows:
            ax.plot(rt, rows[c.threshold_col], lw=1, color="tab:orange")
        hit = rows[rows[c.alert_col].fillna(False).astype(bool)]
        ax.scatter(_times(hit["ts"]), hit[c.score_col], marker="x", color="tab:red", zorder=3)
        for ts in _times(rows.loc[rows["label"] == 1, "ts"]):
            ax.axvline(ts, color="tab:green", alpha=0.3, lw=1)
        ax.set_title(f"{c.name}: {entity}", fontsize=9)
    return _save(fig, path)


def _periods_plot(rows: Sequence[dict[str, Any]], domain: str, path: Path) -> Path | None:
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharex=True)
    for name in dict.fromkeys(r["detector"] for r in rows):
        mine = [r for r in rows if r["detector"] == name]
        x = _times([r["period_start"] for r in mine])
        for ax, key in zip(axes, ("average_precision", "precision", "recall"), strict=True):
            y = [np.nan if r[key] is None else r[key] for r in mine]
            ax.plot(x, y, marker="o", ms=4, label=name)
    for ax, title in zip(axes, ("AP", "precision", "recall"), strict=True):
        ax.set_title(f"{domain}: {title} per period (after warm-up)", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes[0].legend(loc="best", fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _draw_all(jobs: Sequence[tuple[Callable[..., Path | None], tuple[Any, ...]]]) -> list[Path | None]:
    """Each job's figure, `fn(*args)` (the last argument is the file it writes; None when there is nothing to
    draw), in job order. On Linux with two or more cores a forked child draws every second job while this process
    draws the others: the figures are independent and matplotlib draws on one core. A child that fails leaves its
    jobs to this process."""
    for _, args in jobs:
        Path(args[-1]).unlink(missing_ok=True)  # an older report's figure must not pass for a new one
    if len(jobs) < 2 or not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        return [fn(*args) for fn, args in jobs]
    _plt()  # imported once, before the fork
    theirs = list(jobs[1::2])
    pid = os.fork()
    if pid == 0:  # the child: draw, then leave without running the parent's exit handlers
        code = 1
        try:
            for fn, args in theirs:
                fn(*args)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    mine = [fn(*args) for fn, args in jobs[0::2]]
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0:
        done: list[Path | None] = [Path(args[-1]) if Path(args[-1]).exists() else None for _, args in theirs]
    else:
        done = [fn(*args) for fn, args in theirs]
    out: list[Path | None] = [None] * len(jobs)
    out[0::2], out[1::2] = mine, done
    return out


# ---------------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    """A table cell: rounded numbers, '–' for missing, everything else HTML-escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return html.escape(str(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], *, first_is_header: bool = False,
           widths: Sequence[str] | None = None) -> str:
    cols = "".join(f'<col style="width:{w}">' for w in widths) if widths else ""
    header = list(header)
    head = f"<thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr></thead>" if any(header) else ""
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            tag = "th" if first_is_header and i == 0 else "td"
            cls = ' class="num"' if isinstance(v, int | float | np.number) and not isinstance(v, bool) else ""
            cells.append(f"<{tag}{cls}>{_fmt(v)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{cols}{head}<tbody>{''.join(body)}</tbody></table>"


# (label, key in DetectorMetrics.row(), section)
_METRIC_ROWS: list[tuple[str, str]] = [
    ("events", "events"), ("scored", "scored"), ("labelled", "labelled"), ("positives", "positives"),
    ("alerts", "alerts"), ("alerts/hour", "alerts_per_hour"), ("precision", "precision"), ("recall", "recall"),
    ("F1", "f1"), ("FAR %", "far_pct"), ("MAR %", "mar_pct"), ("TP", "tp"), ("FP", "fp"), ("TN", "tn"),
    ("FN", "fn"), ("detection delay (s, median)", "detection_delay_s"), ("anomalies detected", "detected_segments"),
    ("anomalies", "anomalous_segments"), ("ROC AUC", "roc_auc"), ("AP", "average_precision"),
]


def _metrics_table(domain: str, overall: list[dict[str, Any]], after: list[dict[str, Any]], k: int) -> str:
    mine = [r for r in overall if r["domain"] == domain]
    mine_after = {r["detector"]: r for r in after if r["domain"] == domain}
    extra = ([(f"CP@{k}", f"card_precision@{k}")] if domain == "transactions"
             else [("NAB standard", "nab_standard"), ("NAB low FP", "nab_low_fp"), ("NAB low FN", "nab_low_fn")])
    header = ["metric"]
    columns: list[dict[str, Any]] = []
    for i, r in enumerate(mine):
        role = "champion: alerts sent" if i == 0 else "challenger: alerts it would raise"
        header += [f"{r['detector']} ({role}), all events", f"{r['detector']}, after warm-up"]
        columns += [r, mine_after.get(r["detector"], {})]
    rows = [[label, *(col.get(key) for col in columns)] for label, key in [*_METRIC_ROWS, *extra]]
    return _table(header, rows, first_is_header=True, widths=["22%"] + [f"{78 / max(len(columns), 1):.2f}%"] * len(columns))


_PERIOD_COLUMNS = [("period", "period"), ("detector", "detector"), ("events", "events"),
                   ("warm-up (left out)", "warm_up_events"), ("known entities (left out)", "known_removed"),
                   ("positives", "positives"), ("alerts", "alerts"), ("precision", "precision"), ("recall", "recall"),
                   ("ROC AUC", "roc_auc"), ("AP", "average_precision")]


def _periods_table(rows: list[dict[str, Any]], k: int, domain: str) -> str:
    columns = list(_PERIOD_COLUMNS)
    columns.append((f"CP@{k}", f"card_precision@{k}") if domain == "transactions" else ("NAB", "nab_standard"))
    return _table([c[0] for c in columns], ([r.get(key) for _, key in columns] for r in rows))


def _alerts_table(frame: pd.DataFrame, limit: int) -> tuple[str, int]:
    alerts = frame[frame["alert"]].sort_values("ts", kind="stable")
    shown = alerts.head(limit)
    rows = ([_iso(float(r.ts)), r.domain, r.entity, r.event_id, _finite(r.score), _finite(r.threshold),
             None if pd.isna(r.label) else int(r.label)]
            for r in shown.itertuples(index=False))
    header = ["time (UTC)", "domain", "entity", "event_id", "score", "threshold", "label"]
    return _table(header, rows, widths=["17%", "11%", "17%", "23%", "11%", "11%", "10%"]), len(alerts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:0 auto;padding:1em 1.5em;
line-height:1.4;color:#222}
table{border-collapse:collapse;table-layout:fixed;width:100%;word-wrap:break-word;overflow-wrap:break-word;
font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 5px;vertical-align:top;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f3f3}
img{width:100%;height:auto}
figure{margin:1em 0}
figcaption{font-size:12px;color:#555}
dt{font-weight:600;margin-top:.4em}
dd{margin-left:1.5em}
code{word-wrap:break-word;overflow-wrap:break-word}
"""


def write_report(
    frame: pd.DataFrame, out_dir: Path | str, *, title: str = "streamwarden backtest",
    summary: dict[str, Any] | None = None, k: int = 100, period: str | None = None,
    evaluate_from: float | None = None, evaluate_to: float | None = None, known_entity_days: float | None = None,
    label_delay_s: float = 0.0, max_alerts: int = MAX_ALERT_ROWS,
) -> Path:
    """Write scores (Parquet, CSV fallback), metrics.json, PNG plots and index.html; returns index.html.

    metrics.json: summary, evaluation (window, period, known-entity rule, warm-up per domain, counts),
    metrics (every evaluated event), after_warmup, periods (see `period_metrics`), definitions.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_file = out_dir / "scores.parquet"
    try:
        frame.to_parquet(scores_file, index=False)
    except ImportError:
        scores_file = out_dir / "scores.csv"
        frame.to_csv(scores_file, index=False)

    protocol = _Protocol(evaluate_from, evaluate_to, known_entity_days, label_delay_s, period)
    marked, resolved = _marked(frame, protocol)
    evaluated = _selected(marked, after_warmup=False)
    after = _selected(marked, after_warmup=True)
    overall_rows = [m.row() for m in _metrics_of(evaluated, marked, k)]
    after_rows = [m.row() for m in _metrics_of(after, marked, k)]
    period_rows = _period_rows(marked, resolved, k)
    warm = warmup_summary(marked)
    evaluation = {
        "evaluate_from": evaluate_from, "evaluate_to": evaluate_to,
        "evaluate_from_iso": _iso(evaluate_from), "evaluate_to_iso": _iso(evaluate_to),
        "period": resolved, "known_entity_days": known_entity_days, "label_delay_s": label_delay_s,
        "events": len(marked), "events_in_window": int(marked["_in_window"].sum()),
        "known_removed": int((marked["_in_window"] & marked["_known"]).sum()),
        "evaluated": len(evaluated), "evaluated_after_warmup": len(after), "warm_up": warm,
    }
    payload = {"summary": summary or {}, "evaluation": evaluation, "metrics": overall_rows,
               "after_warmup": after_rows, "periods": period_rows, "definitions": DEFINITIONS}
    (out_dir / "metrics.json").write_text(json.dumps(_jsonable(payload), indent=2, default=str), encoding="utf-8")

    by_domain = [(str(domain), part, contenders(part), [r for r in period_rows if r["domain"] == domain])
                 for domain, part in marked.groupby("domain", sort=True)]
    jobs: list[tuple[Callable[..., Path | None], tuple[Any, ...]]] = []
    for domain, part, found, mine in by_domain:
        slug = _slug(domain)
        for c in found:
            stem = f"{slug}" if c.champion else f"{slug}_{_slug(c.name)}"
            jobs.append((_timeline, (part, domain, c, out_dir / f"{stem}_timeline.png")))
        jobs.append((_pr_roc, (after[after["domain"] == domain], domain, found, out_dir / f"{slug}_pr_roc.png")))
        jobs.append((_periods_plot, (mine, domain, out_dir / f"{slug}_periods.png")))
        for c in found:
            stem = f"{slug}" if c.champion else f"{slug}_{_slug(c.name)}"
            jobs.append((_top_entities, (part, domain, c, out_dir / f"{stem}_top_entities.png")))
    drawn = _draw_all(jobs)
    sections: list[str] = []
    for domain, _, _, mine in by_domain:
        images = [path for (_, args), path in zip(jobs, drawn, strict=True) if args[1] == domain]  # args: (..., domain, ...)
        figures = "".join(
            f'<figure><img src="{html.escape(p.name, quote=True)}" alt="{html.escape(p.stem, quote=True)}">'
            f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in images if p is not None)
        sections.append(
            f"<h2>{html.escape(domain)}</h2>"
            f"<h3>Metrics</h3><p>Alert metrics (precision … anomalies) judge the alerts raised (column "
            f"<code>alert</code> for the champion: the alerts users receive); ROC AUC, AP and "
            f"{'CP@' + str(k) if domain == 'transactions' else 'NAB'} judge the scores.</p>"
            f"{_metrics_table(domain, overall_rows, after_rows, k)}"
            f"<h3>Per {html.escape(resolved)} (after warm-up)</h3>{_periods_table(mine, k, domain)}"
            f"<h3>Plots</h3>{figures}")

    protocol_rows: list[list[Any]] = [
        ["evaluation window", f"{_iso(evaluate_from) or 'start'} to {_iso(evaluate_to) or 'end'} (end excluded)"],
        ["period", resolved],
        ["known-entity rule", "off" if known_entity_days is None else
         f"per {resolved}, entities with a fraud revealed (event time + {label_delay_s:g} s) in the "
         f"{known_entity_days:g} days before the period start are left out"],
        ["events / in window / left out as known / evaluated / evaluated after warm-up",
         f"{len(marked):,} / {evaluation['events_in_window']:,} / {evaluation['known_removed']:,} / "
         f"{len(evaluated):,} / {len(after):,}"],
    ]
    for w in warm:
        span = f"{w['warm_up_first']} to {w['warm_up_last']}" if w["warm_up_events"] else "none"
        protocol_rows.append([f"warm-up ({w['domain']})", f"{w['warm_up_events']:,} of {w['events']:,} events; {span}"])
    alerts_html, n_alerts = _alerts_table(marked, max_alerts)
    definitions = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>"
                          for name, text in DEFINITIONS.items())
    summary_rows = [[str(key), value] for key, value in (summary or {}).items()]
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
{_table(["", ""], summary_rows, first_is_header=True, widths=["35%", "65%"]) if summary_rows else ""}
<h2>What is evaluated</h2>
{_table(["", ""], protocol_rows, first_is_header=True, widths=["35%", "65%"])}
{''.join(sections)}
<h2>Alerts</h2><p>{'The first ' + str(min(n_alerts, max_alerts)) + ' of ' if n_alerts > max_alerts else 'All '}{n_alerts:,}
alerts users received, in event-time order.</p>
{alerts_html}
<h2>What the metrics mean</h2><dl>{definitions}</dl>
<p>Per-event scores: <a href="{html.escape(scores_file.name, quote=True)}">{html.escape(scores_file.name)}</a>
({html.escape(', '.join(c for c in SCORE_COLUMNS if c in frame.columns))}); every number above:
<a href="metrics.json">metrics.json</a>.</p>
</body></html>"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
