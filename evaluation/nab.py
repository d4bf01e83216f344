"""SKAB's evaluation: binary F1 / FAR / MAR on `anomaly` and the NAB score on `changepoint`.

Follows SKAB's `core/metrics.py` (`chp_score`) as its leaderboard uses it:

- binary: TP/TN/FP/FN pooled over all files, F1 = TP / (TP + (FP + FN) / 2),
  FAR = 100 * FP / (FP + TN), MAR = 100 * FN / (FN + TP).
- NAB: each true changepoint opens a detection window of `window` to its right
  ([cp, cp + window], both ends inclusive); overlapping windows are resolved by moving the
  right window's start to the left window's end ("cut right window"). In each window only the
  first predicted changepoint counts, scored by SKAB's "improved" scaled sigmoid (A_tp at the
  window start, A_fp at its end); predictions outside every window are FPs (A_fp each);
  windows without a prediction are FNs (A_fn each). Per profile,
  score = 100 * (S - S_null) / (S_perfect - S_null) with S_null = n_windows * A_fn and
  S_perfect = n_windows * A_tp, sums taken over all files.
- predicted changepoints are the transitions of the binary alarm series:
  |diff(alarm)| with the first element equal to the first alarm (SKAB notebooks).

>>> import numpy as np
>>> binary_scores([np.array([0, 1, 1, 0])], [np.array([0, 1, 0, 1])]).f1
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_DETAIL = 1000  # resolution of SKAB's scaled scoring function


@dataclass(frozen=True)
class NabProfile:
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: dict[str, NabProfile] = {
    "standard": NabProfile(1.0, -0.11, -1.0),
    "low_fp": NabProfile(1.0, -0.22, -1.0),
    "low_fn": NabProfile(1.0, -0.11, -2.0),
}


@dataclass(frozen=True)
class BinaryScores:
    f1: float
    far: float  # %
    mar: float  # %
    tp: int
    tn: int
    fp: int
    fn: int


@dataclass(frozen=True)
class NabScores:
    standard: float
    low_fp: float
    low_fn: float
    missed: int  # windows without a detection
    false_positives: int  # predicted changepoints outside every window
    n_changepoints: int


def binary_scores(true: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> BinaryScores:
    """Pooled F1 / FAR / MAR over files; `true[i]` and `pred[i]` are 0/1 arrays of one file."""
    if len(true) != len(pred):
        raise ValueError("true and pred must hold the same number of files")
    tp = tn = fp = fn = 0
    for t, p in zip(true, pred, strict=True):
        t, p = np.asarray(t) == 1, np.asarray(p) == 1
        if t.shape != p.shape:
            raise ValueError(f"label and prediction lengths differ: {t.shape} vs {p.shape}")
        tp += int(np.sum(t & p))
        tn += int(np.sum(~t & ~p))
        fp += int(np.sum(~t & p))
        fn += int(np.sum(t & ~p))
    f1 = tp / (tp + (fn + fp) / 2) if tp + fn + fp else 1.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return BinaryScores(f1, far, mar, tp, tn, fp, fn)


def changepoints_from_alarms(alarms: np.ndarray) -> np.ndarray:
    """Predicted changepoints: 1 wherever the alarm series switches (first row: its alarm)."""
    a = np.asarray(alarms).astype(np.int64)
    out = np.zeros_like(a)
    if a.size:
        out[0] = a[0]
        out[1:] = np.abs(np.diff(a))
    return out


def detection_windows(
    cp_times: np.ndarray, window: np.timedelta64
) -> list[tuple[np.datetime64, np.datetime64]]:
    """Windows [cp, cp + window] right of each changepoint; overlaps cut from the right window."""
    bounds = [[t, t + window] for t in np.sort(np.asarray(cp_times, dtype="datetime64[ns]"))]
    for i in range(len(bounds) - 1):
        if bounds[i][1] >= bounds[i + 1][0]:
            bounds[i + 1][0] = bounds[i][1]
    return [(b[0], b[1]) for b in bounds]


def _scaled(position: float, profile: NabProfile) -> float:
    """SKAB's improved NAB sigmoid at relative `position` in [0, 1] of the window."""
    x = np.linspace(-np.pi / 2, np.pi / 2, _DETAIL)
    span = profile.a_tp - profile.a_fp
    y = span / 2 * -np.tanh(x) / np.tanh(np.pi / 2) + span / 2 + profile.a_fp
    return float(y[min(int(position * _DETAIL), _DETAIL - 1)])


def _single_file(
    times: np.ndarray, true_cp: np.ndarray, pred_cp: np.ndarray, window: np.timedelta64
) -> tuple[list[float], int, int, int]:
    """(first-detection positions of hit windows, misses, false positives, n windows) of one file."""
    times = np.asarray(times, dtype="datetime64[ns]")
    bounds = detection_windows(times[np.asarray(true_cp) == 1], window)
    pred_t = np.sort(times[np.asarray(pred_cp) == 1])
    if not bounds:
        return [], 0, int(pred_t.size), 0
    outside = pred_t < bounds[0][0]
    positions: list[float] = []
    missed = 0
    for i, (lo, hi) in enumerate(bounds):
        inside = pred_t[(pred_t >= lo) & (pred_t <= hi)]
        if inside.size == 0:
            missed += 1
        else:
            width = (hi - lo).astype(np.int64)
            positions.append(float((inside[0] - lo).astype(np.int64) / width) if width > 0 else 0.0)
        nxt = bounds[i + 1][0] if i + 1 < len(bounds) else None
        if nxt is None:
            outside |= pred_t > hi
        else:
            outside |= (pred_t > hi) & (pred_t < nxt)
    return positions, missed, int(outside.sum()), len(bounds)


def nab_scores(
    times: Sequence[np.ndarray],
    true_cp: Sequence[np.ndarray],
    pred_cp: Sequence[np.ndarray],
    window: str | np.timedelta64 = "60s",
) -> NabScores:
    """NAB scores (standard, LowFP, LowFN) over files; all three sequences are per file."""
    width = np.timedelta64(int(_seconds(window) * 1e9), "ns")
    per_file = [_single_file(t, c, p, width) for t, c, p in zip(times, true_cp, pred_cp, strict=True)]
    n_windows = sum(f[3] for f in per_file)
    missed = sum(f[1] for f in per_file)
    fps = sum(f[2] for f in per_file)
    results = {}
    for name, prof in PROFILES.items():
        score = prof.a_fp * fps + prof.a_fn * missed
        score += sum(_scaled(pos, prof) for f in per_file for pos in f[0])
        null, perfect = n_windows * prof.a_fn, n_windows * prof.a_tp
        results[name] = 100.0 * (score - null) / (perfect - null) if n_windows else 0.0
    return NabScores(results["standard"], results["low_fp"], results["low_fn"], missed, fps, n_windows)


def _seconds(window: str | np.timedelta64) -> float:
    if isinstance(window, np.timedelta64):
        return float(window / np.timedelta64(1, "s"))
    import pandas as pd

    return pd.Timedelta(window).total_seconds()
