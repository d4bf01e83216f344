"""Quality metrics for backtests: ranking metrics, the Fraud Detection Handbook's Card Precision@k
(with its known-compromised-card rule), threshold metrics, alert rate and detection delay.

>>> import pandas as pd
>>> df = pd.DataFrame({"TX_TIME_DAYS": [0, 0, 0], "CUSTOMER_ID": [1, 1, 2],
...                    "TX_FRAUD": [0, 1, 0], "predictions": [0.9, 0.2, 0.5]})
>>> card_precision_at_k(df, k=1)
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

__all__ = [
    "ThresholdMetrics",
    "alerts_per_hour",
    "average_precision",
    "card_precision_at_k",
    "detection_delay",
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
    return float(roc_auc_score(y, np.asarray(scores, np.float64)))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, sklearn's step definition)."""
    y = np.asarray(y_true)
    if y.sum() == 0:
        return float("nan")
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


def remove_known_compromised(df: pd.DataFrame, test_start_day: int, *, train_days: int = 7,
                             delay_days: int = 7, test_days: int = 7, day_col: str = "TX_TIME_DAYS",
                             card_col: str = "CUSTOMER_ID", label_col: str = "TX_FRAUD") -> pd.DataFrame:
    """The book's test set: days `test_start_day .. +test_days-1` minus known compromised cards.

    Known on test day d: cards with a fraud in the training week (which starts
    `train_days + delay_days` before the test week) or on any day up to d - delay_days - 1.
    """
    train_start = test_start_day - train_days - delay_days
    fraud_days = df.loc[df[label_col] == 1, [day_col, card_col]]
    parts = []
    for d in range(test_start_day, test_start_day + test_days):
        known = fraud_days.loc[(fraud_days[day_col] >= train_start) & (fraud_days[day_col] <= d - delay_days - 1),
                               card_col]
        day = df[df[day_col] == d]
        parts.append(day[~day[card_col].isin(set(known.tolist()))])
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
    """Confusion counts, precision, recall, F1 and false-alarm rate of `scores >= threshold` (or of `flags`)."""
    y = np.asarray(y_true).astype(bool)
    if flags is None:
        if scores is None or threshold is None:
            raise ValueError("give either flags or scores and threshold")
        flags = np.asarray(scores) >= threshold
    pred = np.asarray(flags).astype(bool)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[False, True]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    far = fp / (fp + tn) if fp + tn else 0.0
    return ThresholdMetrics(tp, fp, tn, fn, precision, recall, f1, far)


def alerts_per_hour(alert_ts: np.ndarray, start_ts: float, end_ts: float) -> float:
    """Alerts per hour of event time over [start_ts, end_ts)."""
    hours = (end_ts - start_ts) / 3600.0
    if hours <= 0:
        raise ValueError("end_ts must be after start_ts")
    a = np.asarray(alert_ts, np.float64)
    return float(((a >= start_ts) & (a < end_ts)).sum() / hours)


def detection_delay(entities: np.ndarray, ts: np.ndarray, y_true: np.ndarray,
                    flags: np.ndarray) -> pd.DataFrame:
    """Per compromised entity: time of its first fraud, of its first flagged fraud, and the delay.

    Delay is NaN for entities whose frauds were never flagged. Columns: entity, first_fraud_ts,
    first_detected_ts, delay_s, frauds_before_detection.
    """
    df = pd.DataFrame({"entity": np.asarray(entities), "ts": np.asarray(ts, np.float64),
                       "y": np.asarray(y_true).astype(bool), "flag": np.asarray(flags).astype(bool)})
    frauds = df[df.y].sort_values("ts", kind="mergesort")
    if frauds.empty:
        return pd.DataFrame(columns=["entity", "first_fraud_ts", "first_detected_ts", "delay_s",
                                     "frauds_before_detection"])
    first = frauds.groupby("entity", sort=True)["ts"].min()
    detected = frauds[frauds.flag].groupby("entity")["ts"].min()
    out = pd.DataFrame({"first_fraud_ts": first, "first_detected_ts": detected.reindex(first.index)})
    out["delay_s"] = out.first_detected_ts - out.first_fraud_ts
    before = frauds.merge(out[["first_detected_ts"]], left_on="entity", right_index=True)
    missed = before[before.first_detected_ts.isna() | (before.ts < before.first_detected_ts)]
    out["frauds_before_detection"] = missed.groupby("entity").size().reindex(first.index).fillna(0).astype(int)
    return out.reset_index(names="entity")
