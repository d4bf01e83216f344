"""SKAB's F1 / FAR / MAR and NAB score on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.nab import binary_scores, changepoints_from_alarms, detection_windows, nab_scores


def seconds(n: int) -> np.ndarray:
    """n timestamps one second apart."""
    return np.datetime64("2020-03-09T10:00:00", "ns") + np.arange(n) * np.timedelta64(1, "s")


def cps(n: int, *at: int) -> np.ndarray:
    out = np.zeros(n, dtype=int)
    out[list(at)] = 1
    return out


def nab(pred_at: list[int], true_at: list[int], n: int = 300, window: str = "60s"):
    return nab_scores([seconds(n)], [cps(n, *true_at)], [cps(n, *pred_at)], window=window)


def test_binary_scores_follow_skab_definitions() -> None:
    b = binary_scores([np.array([0, 1, 1, 0])], [np.array([0, 1, 0, 1])])
    assert (b.tp, b.tn, b.fp, b.fn) == (1, 1, 1, 1)
    assert b.f1 == pytest.approx(0.5)
    assert b.far == pytest.approx(50.0)
    assert b.mar == pytest.approx(50.0)


def test_binary_scores_pool_counts_over_files() -> None:
    # file 1: TP=2, FP=0, FN=0, TN=2; file 2: TP=0, FP=1, FN=1, TN=2
    b = binary_scores(
        [np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])],
        [np.array([1, 1, 0, 0]), np.array([0, 1, 0, 0])],
    )
    assert (b.tp, b.tn, b.fp, b.fn) == (2, 4, 1, 1)
    assert b.f1 == pytest.approx(2 / (2 + 1))
    assert b.far == pytest.approx(100 * 1 / 5)
    assert b.mar == pytest.approx(100 * 1 / 3)


def test_binary_scores_reject_length_mismatch() -> None:
    with pytest.raises(ValueError):
        binary_scores([np.array([0, 1])], [np.array([0, 1, 1])])


def test_changepoints_are_alarm_transitions_with_first_alarm() -> None:
    assert changepoints_from_alarms(np.array([1, 1, 0, 0, 1])).tolist() == [1, 0, 1, 0, 1]
    assert changepoints_from_alarms(np.array([0, 0, 1, 1, 0])).tolist() == [0, 0, 1, 0, 1]


def test_detection_at_changepoint_scores_100_and_none_scores_0() -> None:
    assert nab([100], [100]).standard == pytest.approx(100.0)
    empty = nab([], [100])
    assert empty.standard == pytest.approx(0.0)
    assert empty.missed == 1


def test_detection_at_window_end_earns_a_fp_weight() -> None:
    # relative position 1 -> A_fp = -0.11; (−0.11 − (−1)) / (1 − (−1)) = 0.445
    assert nab([160], [100]).standard == pytest.approx(44.5)


def test_detection_mid_window_uses_the_scaled_sigmoid() -> None:
    x = -np.pi / 2 + 500 * np.pi / 999  # sample 500 of 1000 on [-pi/2, pi/2]
    y = 0.555 * -np.tanh(x) / np.tanh(np.pi / 2) + 0.555 - 0.11
    assert nab([130], [100]).standard == pytest.approx(100 * (y + 1) / 2)


def test_false_positive_outside_window_costs_a_fp_weight_per_profile() -> None:
    r = nab([10, 100], [100])
    assert r.false_positives == 1
    assert r.standard == pytest.approx(100 * (1 - 0.11 + 1) / 2)
    assert r.low_fp == pytest.approx(100 * (1 - 0.22 + 1) / 2)
    assert r.low_fn == pytest.approx(100 * (1 - 0.11 + 2) / 3)


def test_only_first_detection_in_a_window_counts() -> None:
    r = nab([100, 110, 120], [100])
    assert r.false_positives == 0
    assert r.standard == pytest.approx(100.0)


def test_overlapping_windows_cut_the_right_one() -> None:
    bounds = detection_windows(seconds(300)[[100, 120]], np.timedelta64(60, "s"))
    assert [
        (
            int((lo - seconds(1)[0]) / np.timedelta64(1, "s")),
            int((hi - seconds(1)[0]) / np.timedelta64(1, "s")),
        )
        for lo, hi in bounds
    ] == [(100, 160), (160, 180)]
    # a detection on the shared boundary counts in both windows: end of the first, start of the second
    r = nab([160], [100, 120])
    assert r.missed == 0
    assert r.standard == pytest.approx(100 * (1 - 0.11 + 2) / 4)


def test_scores_pool_over_files() -> None:
    n = 300
    r = nab_scores([seconds(n), seconds(n)], [cps(n, 100), cps(n, 100)], [cps(n, 100), cps(n)], window="60s")
    assert r.n_changepoints == 2 and r.missed == 1
    assert r.standard == pytest.approx(50.0)
