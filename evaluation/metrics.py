"""Quality metrics, one implementation each: ranking metrics, the Fraud Detection Handbook's Card
Precision@k (with its known-compromised-card rule), confusion counts and the rates built on them
(precision, recall, F1, FAR, MAR), alert rate and detection delay.

Used by the backtest report (`evaluation.report`), the champion leaderboard and the benchmarks.

>>> import pandas as pd
>>> df = pd.DataFrame({"TX_TIME_DAYS": [0, 0, 0], "CUSTOMER_ID": [1, 1, 2],
...                    "TX_FRAUD": [0, 1, 0], "predictions": [0.9, 0.2, 0.5]})
>>> card_precision_at_k(df, k=1)
1.0
>>> precision_recall([1, 0, 1, 0], [True, True, False, False])
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "Confusion",
    "ThresholdMetrics",
    "alerts_per_hour",
    "average_precision",
    "card_precision_at_k",
    "compromised_between",
    "confusion",
    "detection_delay",
    "drop_compromised",
    "precision_recall",
    "rates",
    "remove_known_compromised",
    "roc_auc",
    "threshold_metrics",
    "week_metrics",
]

DAY = 86_400.0


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.asarray(scores, np.float64)))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, sklearn's step definition)."""
    y = np.asarray(y_true)
    if y.sum() == 0:
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, np.asarray(scores, np.float64)))


def card_precision_at_k(df: pd.DataFrame, k: int = 100, *, day_col: str = "TX_TIME_DAYS",
                        card_col: str = "CUSTOMER_ID", label_col: str = "TX_FRAUD",
                        score_col: str = "predictions", remove_detected: bool = True) -> float:
    """The book's Card Precision@k, averaged over the days of `df`.

    Per day: each card gets its highest score and highest label; the top-k cards are taken and the
    share of compromised ones among them (divided by k) is the day's value. A compromised card found
    in the top k of an earlier day is dropped from later days.
    """
    detected: set = set()
    values = []
    for _, day in df.groupby(day_col, sort=True):
        if remove_detected and detected:
            day = day[~day[card_col].isin(detected)]
        per_card = day.groupby(card_col)[[score_col, label_col]].max()
        top = per_card.sort_values(score_col, ascending=False, kind="mergesort").head(k)
        hits = top.index[top[label_col] == 1]
        values.append(len(hits) / k)
        if remove_detected:
            detected.update(hits.tolist())
    return float(np.mean(values)) if values else float("nan")


def compromised_between(df: pd.DataFrame, start: float, stop: float, *, time_col: str = "TX_TIME_DAYS",
                        card_col: str = "CUSTOMER_ID", label_col: str = "TX_FRAUD") -> set:
    """Cards with a fraud (label 1) whose `time_col` lies in [start, stop): the cards known to be compromised
    once those frauds were revealed. This is the one implementation of the known-compromised-card rule."""
    t = df[time_col]
    hit = (df[label_col] == 1) & (t >= start) & (t < stop)
    return set(df.loc[hit, card_col].tolist())


def drop_compromised(df: pd.DataFrame, known: set, *, card_col: str = "CUSTOMER_ID") -> pd.DataFrame:
    """The rows of `df` whose card is not in `known`."""
    return df[~df[card_col].isin(known)] if known else df


def remove_known_compromised(df: pd.DataFrame, test_start_day: int, *, train_days: int = 7,
                             delay_days: int = 7, test_days: int = 7, day_col: str = "TX_TIME_DAYS",
                             card_col: str = "CUSTOMER_ID", label_col: str = "TX_FRAUD") -> pd.DataFrame:
    """The book's test set: days `test_start_day .. +test_days-1` minus known compromised cards.

    Known on test day d: cards with a fraud in the training week (which starts
    `train_days + delay_days` before the test week) or on any day up to d - delay_days - 1.
    """
    train_start = test_start_day - train_days - delay_days
    frauds = df[df[label_col] == 1]
    parts = []
    for d in range(test_start_day, test_start_day + test_days):
        known = compromised_between(frauds, train_start, d - delay_days, time_col=day_col, card_col=card_col,
                                    label_col=label_col)
        parts.append(drop_compromised(df[df[day_col] == d], known, card_col=card_col))
    return pd.concat(parts) if parts else df.iloc[:0]


def week_metrics(df: pd.DataFrame, test_start_day: int, **kw: object) -> dict[str, float]:
    """AUC, AP and CP@100 of one test week (known compromised cards removed), book protocol."""
    week = remove_known_compromised(df, test_start_day)
    score_col = str(kw.get("score_col", "predictions"))
    return {
        "auc": roc_auc(week["TX_FRAUD"].to_numpy(), week[score_col].to_numpy()),
        "ap": average_precision(week["TX_FRAUD"].to_numpy(), week[score_col].to_numpy()),
        "cp100": card_precision_at_k(week, k=int(kw.get("k", 100)), score_col=score_col),  # type: ignore[arg-type]
    }


class Confusion(NamedTuple):
    """Confusion counts of binary flags against 0/1 labels; unpacks as (tp, fp, tn, fn)."""

    tp: int
    fp: int
    tn: int
    fn: int


def confusion(y_true: np.ndarray | Sequence[int], flags: np.ndarray | Sequence[bool]) -> Confusion:
    """Confusion counts of `flags` (the alerts) against `y_true` (1 = fraud/anomaly).

    >>> confusion([1, 1, 0, 0, 0], [True, False, True, False, False])
    Confusion(tp=1, fp=1, tn=2, fn=1)
    """
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(flags).astype(bool)
    if y.shape != pred.shape:
        raise ValueError(f"labels and flags differ in shape: {y.shape} vs {pred.shape}")
    tp = int(np.count_nonzero(y & pred))
    fp = int(np.count_nonzero(~y & pred))
    fn = int(np.count_nonzero(y & ~pred))
    return Confusion(tp, fp, int(y.size) - tp - fp - fn, fn)


def rates(c: Confusion) -> dict[str, float | None]:
    """precision, recall, f1, far (false alarm rate, share of negatives flagged) and mar (missed alarm rate,
    share of positives missed), as fractions; None where the denominator is 0.

    F1 = TP / (TP + (FP + FN) / 2), the harmonic mean of precision and recall.

    >>> rates(Confusion(tp=2, fp=1, tn=4, fn=1))["f1"]
    0.6666666666666666
    """
    tp, fp, tn, fn = c.tp, c.fp, c.tn, c.fn
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": tp / (tp + (fp + fn) / 2) if tp + fp + fn else None,
        "far": fp / (fp + tn) if fp + tn else None,
        "mar": fn / (fn + tp) if fn + tp else None,
    }


def precision_recall(y_true: np.ndarray | Sequence[int],
                     flags: np.ndarray | Sequence[bool]) -> tuple[float | None, float | None]:
    """(precision, recall) of `flags` against `y_true`; None where undefined (no alert / no positive)."""
    r = rates(confusion(y_true, flags))
    return r["precision"], r["recall"]


@dataclass(frozen=True)
class ThresholdMetrics:
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    false_alarm_rate: float


def threshold_metrics(y_true: np.ndarray, scores: np.ndarray | None = None, threshold: float | None = None,
                      *, flags: np.ndarray | None = None) -> ThresholdMetrics:
    """Confusion counts, precision, recall, F1 and false-alarm rate of `scores >= threshold` (or of `flags`);
    undefined rates are 0.0 here (see `rates` for the None convention)."""
    if flags is None:
        if scores is None or threshold is None:
            raise ValueError("give either flags or scores and threshold")
        flags = np.asarray(scores) >= threshold
    c = confusion(y_true, flags)
    r = rates(c)
    return ThresholdMetrics(c.tp, c.fp, c.tn, c.fn, r["precision"] or 0.0, r["recall"] or 0.0, r["f1"] or 0.0,
                            r["far"] or 0.0)


def alerts_per_hour(alert_ts: np.ndarray, start_ts: float, end_ts: float) -> float:
    """Alerts per hour of event time over [start_ts, end_ts)."""
    hours = (end_ts - start_ts) / 3600.0
    if hours <= 0:
        raise ValueError("end_ts must be after start_ts")
    a = np.asarray(alert_ts, np.float64)
    return float(((a >= start_ts) & (a < end_ts)).sum() / hours)


def detection_delay(entities: np.ndarray, ts: np.ndarray, y_true: np.ndarray,
                    flags: np.ndarray, *, segments: bool = False) -> pd.DataFrame:
    """Per compromised entity: time of its first fraud, of its first flagged fraud, and the delay.

    With `segments=True` each run of consecutive positive events of an entity (in time order) is one
    anomaly of its own (sensors: several incidents per device), numbered in the `segment` column.
    Delay is NaN for anomalies whose positive events were never flagged. Columns: entity, segment,
    first_fraud_ts, first_detected_ts, delay_s, frauds_before_detection.
    """
    df = pd.DataFrame({"entity": np.asarray(entities), "ts": np.asarray(ts, np.float64),
                       "y": np.asarray(y_true).astype(bool), "flag": np.asarray(flags).astype(bool)})
    df = df.sort_values("ts", kind="mergesort")
    if segments:
        previous = df.groupby("entity", sort=False)["y"].shift(1, fill_value=False).astype(bool)
        df["segment"] = (df["y"] & ~previous).astype(int).groupby(df["entity"]).cumsum()
    else:
        df["segment"] = 1
    frauds = df[df.y]
    columns = ["entity", "segment", "first_fraud_ts", "first_detected_ts", "delay_s", "frauds_before_detection"]
    if frauds.empty:
        return pd.DataFrame(columns=columns)
    keys = ["entity", "segment"]
    first = frauds.groupby(keys, sort=True)["ts"].min()
    detected = frauds[frauds.flag].groupby(keys)["ts"].min()
    out = pd.DataFrame({"first_fraud_ts": first, "first_detected_ts": detected.reindex(first.index)})
    out["delay_s"] = out.first_detected_ts - out.first_fraud_ts
    before = frauds.merge(out[["first_detected_ts"]], left_on=keys, right_index=True)
    missed = before[before.first_detected_ts.isna() | (before.ts < before.first_detected_ts)]
    out["frauds_before_detection"] = missed.groupby(keys).size().reindex(first.index).fillna(0).astype(int)
    return out.reset_index()[columns]
