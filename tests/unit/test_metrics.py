"""evaluation.metrics on small cases that can be checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import (
    Confusion,
    alerts_per_hour,
    average_precision,
    card_precision_at_k,
    compromised_between,
    confusion,
    detection_delay,
    precision_recall,
    rates,
    remove_known_compromised,
    roc_auc,
    threshold_metrics,
    week_metrics,
)


def test_roc_auc_and_average_precision_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)  # 3 of the 4 (fraud, genuine) pairs are ordered right
    assert average_precision(y, s) == pytest.approx((1 / 1 + 2 / 3) / 2)  # precision at each fraud
    assert np.isnan(roc_auc(np.zeros(3), np.arange(3)))
    assert np.isnan(average_precision(np.zeros(3), np.arange(3)))


def frame(rows):
    return pd.DataFrame(rows, columns=["TX_TIME_DAYS", "CUSTOMER_ID", "TX_FRAUD", "predictions"])


def test_card_precision_takes_each_cards_max_score_and_max_label():
    df = frame([
        (0, "a", 0, 0.9), (0, "a", 1, 0.1),  # card a: max score 0.9, compromised (max label 1)
        (0, "b", 0, 0.8),
        (0, "c", 1, 0.7),
    ])
    assert card_precision_at_k(df, k=1) == 1.0  # top card a is compromised
    assert card_precision_at_k(df, k=2) == 0.5  # a and b
    assert card_precision_at_k(df, k=3) == pytest.approx(2 / 3)
    assert card_precision_at_k(df, k=4) == 0.5  # only 3 cards: still divided by k


def test_card_precision_drops_cards_detected_on_earlier_days_and_averages_days():
    df = frame([
        (0, "a", 1, 0.9), (0, "b", 0, 0.1),
        (1, "a", 1, 0.9), (1, "b", 0, 0.5), (1, "c", 1, 0.4),
    ])
    # day 0: a found (1/1). day 1: a is gone, so b (genuine) tops the list: 0/1.
    assert card_precision_at_k(df, k=1) == pytest.approx(0.5)
    assert card_precision_at_k(df, k=1, remove_detected=False) == pytest.approx(1.0)
    # day 1 with k=2: b and c -> 1/2
    assert card_precision_at_k(df, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_known_compromised_cards_follow_the_books_rule():
    # test week starts on day 14: training week = days 0..6, delay = days 7..13
    rows = [
        (3, "train_fraud", 1), (20, "train_fraud", 1),  # fraud in the training week: removed all week
        (-1, "too_old", 1), (14, "too_old", 1),  # fraud before the training week: not "known"
        (9, "delay_fraud", 1), (16, "delay_fraud", 0), (17, "delay_fraud", 0),  # known from day 17 on (9 <= 17-8)
        (15, "late", 1), (20, "late", 0), (23, "late", 0),  # a test-week fraud on day 15 is known on day 23 only
        (14, "clean", 0), (20, "clean", 0),
    ]
    df = pd.DataFrame(rows, columns=["TX_TIME_DAYS", "CUSTOMER_ID", "TX_FRAUD"])
    out = remove_known_compromised(df, 14)
    kept = set(zip(out.TX_TIME_DAYS, out.CUSTOMER_ID, strict=True))
    assert kept == {(14, "too_old"), (16, "delay_fraud"), (15, "late"), (20, "late"), (14, "clean"), (20, "clean")}


def test_week_metrics_combines_the_three_book_metrics():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"TX_TIME_DAYS": rng.integers(14, 21, n), "CUSTOMER_ID": rng.integers(0, 150, n),
                       "TX_FRAUD": (rng.random(n) < 0.1).astype(int)})
    df["predictions"] = df.TX_FRAUD + rng.random(n) * 0.5  # a perfect ranking
    m = week_metrics(df, 14)
    assert m["auc"] == pytest.approx(1.0) and m["ap"] == pytest.approx(1.0)
    assert 0 < m["cp100"] <= 1


def test_threshold_metrics_confusion_precision_recall_f1():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.1, 0.0, 0.3])
    m = threshold_metrics(y, s, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 4, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3) and m.false_alarm_rate == pytest.approx(1 / 5)
    same = threshold_metrics(y, flags=s >= 0.5)
    assert same == m
    empty = threshold_metrics(np.zeros(3), np.zeros(3), 1.0)
    assert empty.precision == 0.0 and empty.f1 == 0.0
    with pytest.raises(ValueError):
        threshold_metrics(y)


def test_alerts_per_hour_counts_alerts_in_the_interval():
    assert alerts_per_hour(np.array([0.0, 10.0, 3599.0, 3600.0, 7300.0]), 0.0, 7200.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        alerts_per_hour(np.array([1.0]), 5.0, 5.0)


def test_detection_delay_per_compromised_entity():
    entities = np.array(["a", "a", "a", "b", "b", "c"])
    ts = np.array([100.0, 200.0, 300.0, 50.0, 60.0, 10.0])
    y = np.array([1, 1, 1, 1, 1, 0])
    flags = np.array([False, False, True, False, False, True])
    out = detection_delay(entities, ts, y, flags).set_index("entity")
    assert list(out.index) == ["a", "b"]  # c never had a fraud
    assert out.loc["a", "delay_s"] == 200.0 and out.loc["a", "frauds_before_detection"] == 2
    assert np.isnan(out.loc["b", "delay_s"]) and out.loc["b", "frauds_before_detection"] == 2


def test_confusion_and_rates_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    flags = np.array([True, True, False, True, False, False, False, False])
    c = confusion(y, flags)
    assert c == Confusion(tp=2, fp=1, tn=4, fn=1)
    tp, fp, tn, fn = c  # unpacks like a tuple
    assert (tp, fp, tn, fn) == (2, 1, 4, 1)
    r = rates(c)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["far"] == pytest.approx(1 / 5) and r["mar"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        confusion(y, flags[:-1])


def test_precision_recall_is_none_where_undefined():
    assert precision_recall([1, 0, 1, 1], [True, True, False, False]) == (0.5, pytest.approx(1 / 3))
    assert precision_recall([1, 0], [False, False]) == (None, 0.0)  # no alert: precision undefined
    assert precision_recall([0, 0], [True, False]) == (0.0, None)  # no positive: recall undefined
    # threshold_metrics keeps its 0.0 convention on the same counts
    assert threshold_metrics(np.array([1, 0]), flags=np.array([False, False])).precision == 0.0


def test_compromised_between_is_half_open_and_needs_a_fraud():
    df = pd.DataFrame({"TX_TIME_DAYS": [1, 2, 3, 3], "CUSTOMER_ID": ["a", "b", "c", "d"], "TX_FRAUD": [1, 1, 1, 0]})
    assert compromised_between(df, 1, 3) == {"a", "b"}  # day 3 is outside [1, 3)
    assert compromised_between(df, 2, 4) == {"b", "c"}  # d had no fraud


def test_detection_delay_by_segments_counts_each_run_of_positives():
    entities = np.array(["s"] * 7)
    ts = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    y = np.array([0, 1, 1, 0, 1, 1, 1])
    flags = np.array([False, False, True, False, False, False, False])
    per_entity = detection_delay(entities, ts, y, flags)
    assert len(per_entity) == 1 and per_entity.loc[0, "delay_s"] == 10.0
    runs = detection_delay(entities, ts, y, flags, segments=True)
    assert list(runs["segment"]) == [1, 2]
    assert runs.loc[0, "delay_s"] == 10.0 and runs.loc[0, "frauds_before_detection"] == 1
    assert np.isnan(runs.loc[1, "delay_s"]) and runs.loc[1, "frauds_before_detection"] == 3
