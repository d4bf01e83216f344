"""The backtest report on small hand-made score tables: per-period rows, warm-up, evaluation window, the
known-entity rule, HTML escaping, metrics.json, contender plots, and the score log's warming_up column."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evaluation.report import (
    all_metrics,
    evaluation_frame,
    period_metrics,
    thinned,
    warmup_summary,
    write_report,
)
from evaluation.score_log import ScoreLog

DAY = 86_400.0
T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z, a Monday


def two_weeks() -> pd.DataFrame:
    """9 transactions over two weeks, champion `mlp` and challenger `ae` (values checked by hand below)."""
    rows = [  # day, card, score, alert, label, ae score, ae alert
        (0.5, "c1", 0.9, True, 1, 0.1, False),
        (1.5, "c2", 0.8, True, 0, 0.2, False),
        (2.5, "c3", 0.2, False, 0, 0.3, False),
        (3.5, "c4", 0.1, False, 1, 0.4, True),
        (7.5, "c1", 0.95, True, 1, 0.2, False),  # c1's fraud of day 0.5 makes it a known compromised card
        (8.5, "c5", 0.7, True, 1, 0.9, True),
        (9.5, "c6", 0.3, False, 0, 0.1, False),
        (10.5, "c7", 0.6, False, 0, 0.3, False),
        (13.5, "c8", 0.05, False, 0, 0.4, False),
    ]
    day, card, score, alert, label, ae, ae_alert = zip(*rows, strict=True)
    return pd.DataFrame({
        "domain": "transactions", "event_id": [f"e{i}" for i in range(len(rows))], "entity": list(card),
        "ts": T0 + np.array(day) * DAY, "score": score, "threshold": 0.5, "alert": alert,
        "suppressed": False, "warming_up": False, "partition": 0, "offset": range(len(rows)), "detector": "mlp",
        "label": np.array(label, dtype=float), "score__ae": ae, "alert__ae": ae_alert,
    })


def rows_by(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["period"], r["detector"]): r for r in rows}


def test_per_week_rows_are_right_for_a_hand_made_frame() -> None:
    rows = rows_by(period_metrics(two_weeks(), k=2, period="week"))
    assert sorted(rows) == [("2024-01-01", "ae"), ("2024-01-01", "mlp"), ("2024-01-08", "ae"), ("2024-01-08", "mlp")]
    w1, w2 = rows[("2024-01-01", "mlp")], rows[("2024-01-08", "mlp")]
    assert (w1["events"], w1["positives"], w1["alerts"]) == (4, 2, 2)
    assert w1["precision"] == pytest.approx(0.5) and w1["recall"] == pytest.approx(0.5)
    assert w1["roc_auc"] == pytest.approx(0.5)  # 2 of the 4 (fraud, genuine) pairs ordered right
    assert w1["average_precision"] == pytest.approx((1 + 2 / 4) / 2)
    assert w1["period_start"] == T0 and w1["period_end"] == T0 + 7 * DAY
    assert (w2["events"], w2["positives"], w2["alerts"]) == (5, 2, 2)
    assert w2["precision"] == 1.0 and w2["recall"] == 1.0 and w2["roc_auc"] == 1.0
    ae1, ae2 = rows[("2024-01-01", "ae")], rows[("2024-01-08", "ae")]
    assert (ae1["alerts"], ae1["precision"], ae1["recall"]) == (1, 1.0, 0.5)
    assert ae1["roc_auc"] == pytest.approx(0.5) and ae1["average_precision"] == pytest.approx(0.75)
    assert ae2["roc_auc"] == pytest.approx(4 / 6) and ae2["average_precision"] == pytest.approx(0.75)
    assert w1["card_precision@2"] is not None


def test_period_defaults_to_days_for_short_spans_and_weeks_for_long_ones() -> None:
    frame = two_weeks()  # 13 days
    days = {r["period"] for r in period_metrics(frame)}
    assert len(days) == 9 and "2024-01-14" in days  # one row per day with events
    longer = pd.concat([frame, frame.assign(ts=frame["ts"] + 14 * DAY, event_id=frame["event_id"] + "b")])
    weeks = {r["period"] for r in period_metrics(longer)}  # 27 days > 21
    assert weeks == {"2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"}
    with pytest.raises(ValueError):
        period_metrics(frame, period="month")


def test_undefined_period_metrics_are_none() -> None:
    frame = two_weeks()
    frame.loc[frame["ts"] >= T0 + 7 * DAY, "label"] = 0.0  # no fraud in week 2
    w2 = rows_by(period_metrics(frame, period="week"))[("2024-01-08", "mlp")]
    assert w2["positives"] == 0 and w2["recall"] is None and w2["roc_auc"] is None
    assert w2["average_precision"] is None and w2["precision"] == 0.0


def warm_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "domain": "transactions", "event_id": ["w1", "w2", "w3", "a1", "a2", "a3"],
        "entity": ["p", "q", "r", "s", "t", "u"], "ts": T0 + np.array([0, 60, 120, 3600, 7200, 10800.0]),
        "score": [np.nan, 0.9, 0.1, 0.8, 0.2, 0.7], "threshold": 0.5,
        "alert": [False, False, False, True, False, True], "warming_up": [True, True, True, False, False, False],
        "label": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0], "detector": "mlp",
    })


def test_warm_up_rows_are_left_out_of_the_after_warm_up_metrics() -> None:
    frame = warm_frame()
    overall = all_metrics(frame, k=2)[0]
    after = all_metrics(frame, k=2, after_warmup=True)[0]
    assert (overall.events, overall.scored, overall.positives, overall.tp, overall.fn) == (6, 5, 3, 1, 2)
    assert overall.recall == pytest.approx(1 / 3)  # the positives in warm-up raised no alert: missed
    assert (after.events, after.positives, after.tp, after.fn, after.fp) == (3, 1, 1, 0, 1)
    assert after.recall == 1.0 and after.precision == 0.5
    day = period_metrics(frame)[0]
    assert (day["events"], day["warm_up_events"]) == (3, 3)
    assert warmup_summary(frame) == [{
        "domain": "transactions", "events": 6, "warm_up_events": 3, "warm_up_first_ts": T0, "warm_up_last_ts": T0 + 120,
        "warm_up_first": "2024-01-01T00:00:00Z", "warm_up_last": "2024-01-01T00:02:00Z",
    }]


def test_a_frame_without_warming_up_counts_every_event() -> None:
    frame = warm_frame().drop(columns=["warming_up"])
    assert all_metrics(frame, after_warmup=True)[0].events == 6


def test_known_entity_rule_removes_a_card_with_an_earlier_revealed_fraud() -> None:
    frame = two_weeks()
    rows = rows_by(period_metrics(frame, period="week", known_entity_days=7))
    w1, w2 = rows[("2024-01-01", "mlp")], rows[("2024-01-08", "mlp")]
    assert w1["known_removed"] == 0 and w1["events"] == 4
    assert w2["known_removed"] == 1 and (w2["events"], w2["positives"], w2["alerts"]) == (4, 1, 1)
    kept = evaluation_frame(frame, period="week", known_entity_days=7)
    assert "e4" not in set(kept["event_id"]) and "e0" in set(kept["event_id"])
    assert all_metrics(frame, period="week", known_entity_days=7)[0].positives == 3
    # revealed only a week after the fraud (day 7.5): not yet known when week 2 starts
    late = rows_by(period_metrics(frame, period="week", known_entity_days=7, label_delay_s=7 * DAY))
    assert late[("2024-01-08", "mlp")]["known_removed"] == 0
    # a fraud before the evaluation window still makes the card known inside it
    inside = period_metrics(frame, period="week", known_entity_days=7, evaluate_from=T0 + 7 * DAY)
    assert {r["period"] for r in inside} == {"2024-01-08"}
    assert rows_by(inside)[("2024-01-08", "mlp")]["known_removed"] == 1


def test_evaluation_window_restricts_every_metric() -> None:
    frame = two_weeks()
    m = all_metrics(frame, evaluate_from=T0 + 7 * DAY, evaluate_to=T0 + 10 * DAY)[0]
    assert (m.events, m.positives, m.alerts) == (3, 2, 2)  # days 7.5, 8.5, 9.5
    assert all_metrics(frame, evaluate_to=T0 + 7 * DAY)[0].events == 4


def test_html_escapes_entities_ids_and_detector_names(tmp_path: Path) -> None:
    frame = two_weeks()
    frame.loc[0, "entity"] = "<script>alert(1)</script>"
    frame.loc[0, "event_id"] = '<img src=x onerror="boom">'
    frame = frame.rename(columns={"score__ae": "score__<i>ae</i>", "alert__ae": "alert__<i>ae</i>"})
    page = write_report(frame, tmp_path, summary={"input": "<b>bold</b>"}, k=2).read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;boom&quot;&gt;" in page
    assert "<i>ae</i>" not in page and "&lt;i&gt;ae&lt;/i&gt;" in page
    assert "<b>bold</b>" not in page
    assert (tmp_path / "transactions_i_ae_i_timeline.png").exists()


def test_metrics_json_holds_overall_after_warm_up_and_per_period_rows(tmp_path: Path) -> None:
    frame = two_weeks()
    write_report(frame, tmp_path, k=2, period="week", known_entity_days=7, summary={"input": "x.csv"})

    def no_nan(token: str) -> None:
        raise AssertionError(f"metrics.json holds {token}")

    data = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)
    assert data["summary"] == {"input": "x.csv"}
    assert data["periods"] == period_metrics(frame, k=2, period="week", known_entity_days=7)
    assert len(data["periods"]) == 4
    assert [r["detector"] for r in data["metrics"]] == ["mlp", "ae"]
    assert data["metrics"][0]["events"] == 8  # c1's week-2 row left out as known
    assert data["after_warmup"][0]["events"] == 8
    assert data["evaluation"]["known_removed"] == 1 and data["evaluation"]["period"] == "week"
    assert data["evaluation"]["warm_up"][0]["warm_up_events"] == 0
    assert "AP" in data["definitions"]
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(scores) == len(frame) and "score__ae" in scores


def test_every_contender_gets_plots(tmp_path: Path) -> None:
    tx = write_report(two_weeks(), tmp_path / "tx", k=2, period="week").read_text()
    for png in ("transactions_timeline.png", "transactions_ae_timeline.png", "transactions_pr_roc.png",
                "transactions_periods.png", "transactions_top_entities.png", "transactions_ae_top_entities.png"):
        assert (tmp_path / "tx" / png).stat().st_size > 1000
        assert f'src="{png}"' in tx

    n = 200
    label = np.zeros(n)
    label[[50, 51, 52, 150, 151]] = 1
    rng = np.random.default_rng(0)
    sensors = pd.DataFrame({
        "domain": "sensors", "event_id": [f"s{i}" for i in range(n)], "entity": np.where(np.arange(n) % 2, "d1", "d2"),
        "ts": T0 + np.arange(n) * 10.0, "score": rng.random(n) + 2 * label, "threshold": 1.5, "detector": "window_ae",
        "label": label, "warming_up": np.arange(n) < 20, "score__lstm": rng.random(n) + label,
    })
    sensors["alert"] = sensors["score"] > 1.5
    sensors["alert__lstm"] = sensors["score__lstm"] > 1.2
    page = write_report(sensors, tmp_path / "s").read_text()
    for png in ("sensors_timeline.png", "sensors_lstm_timeline.png", "sensors_top_entities.png",
                "sensors_lstm_top_entities.png", "sensors_pr_roc.png", "sensors_periods.png"):
        assert (tmp_path / "s" / png).stat().st_size > 1000
        assert f'src="{png}"' in page
    data = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert {r["detector"] for r in data["metrics"]} == {"window_ae", "lstm"}
    assert all("nab_standard" in r for r in data["metrics"])


def test_figures_a_failed_drawing_child_left_are_drawn_by_the_report_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report draws every second figure in a forked child (Linux, 2+ cores). When the child fails, its figures are
    drawn again in the report's own process; an older report's figure in the folder never passes for a new one."""
    import os

    import evaluation.report as report

    parent, real = os.getpid(), report._timeline

    def timeline_failing_in_a_child(*args: Any) -> Path | None:
        if os.getpid() != parent:
            raise RuntimeError("drawing failed in the child")
        return real(*args)

    monkeypatch.setattr(report, "_timeline", timeline_failing_in_a_child)
    out = tmp_path / "tx"
    out.mkdir()
    (out / "transactions_ae_timeline.png").write_bytes(b"an older report's figure")
    page = write_report(two_weeks(), out, k=2, period="week").read_text()
    for png in ("transactions_timeline.png", "transactions_ae_timeline.png", "transactions_top_entities.png",
                "transactions_ae_top_entities.png"):
        assert (out / png).stat().st_size > 1000
        assert f'src="{png}"' in page


def test_a_figure_with_nothing_to_draw_is_absent_even_when_an_older_one_is_in_the_folder(tmp_path: Path) -> None:
    from evaluation.report import _draw_all

    def draw(path: Path) -> Path:
        path.write_bytes(b"drawn")
        return path

    def nothing_to_draw(path: Path) -> None:
        return None

    stale = tmp_path / "b.png"
    stale.write_bytes(b"an older report's figure")
    jobs = [(draw, (tmp_path / "a.png",)), (nothing_to_draw, (stale,)), (draw, (tmp_path / "c.png",))]
    assert _draw_all(jobs) == [tmp_path / "a.png", None, tmp_path / "c.png"]
    assert not stale.exists()


def test_page_fits_a_laptop_screen_and_rounds_numbers(tmp_path: Path) -> None:
    page = write_report(two_weeks(), tmp_path, k=2, period="week").read_text()
    for rule in ("max-width", "table-layout:fixed", "word-wrap:break-word", "img{width:100%"):
        assert rule in page
    assert "overflow-x" not in page
    assert "0.6667" in page and "0.66666" not in page  # the challenger's week-2 AUC, rounded


def test_alert_table_lists_the_first_200_alerts_in_time_order(tmp_path: Path) -> None:
    n = 250
    frame = pd.DataFrame({
        "domain": "transactions", "event_id": [f"ev{i:03d}" for i in range(n)][::-1], "entity": "card",
        "ts": T0 + np.arange(n)[::-1] * 60.0, "score": 1.0, "threshold": 0.5, "alert": True, "label": 1.0,
    })
    page = write_report(frame, tmp_path).read_text()
    assert "first 200 of 250" in page
    assert "<td>ev000</td>" in page and "<td>ev199</td>" in page and "ev200" not in page
    assert "2024-01-01T00:00:00Z" in page  # times in ISO UTC


def test_score_log_records_warming_up() -> None:
    log = ScoreLog()
    events = [NS(event_id="a", ts=1.0), NS(event_id="b", ts=2.0)]
    records = [NS(partition=0, offset=5), NS(partition=0, offset=6)]
    base = {"keys": ["k1", "k2"], "scores": np.array([np.nan, 0.7]), "thresholds": np.array([np.nan, 0.5]),
            "flags": np.array([False, True]), "suppressed": np.array([False, False]),
            "contender_scores": {"ae": np.array([0.1, 0.2])}, "contender_flags": {"ae": np.array([False, True])}}
    log("sensors", events, records, NS(**base, warming_up=np.array([True, False])))
    log("sensors", events, records, NS(**base))  # no warming_up attribute: all False
    frame = log.frame()
    assert frame["warming_up"].tolist() == [True, False, False, False]
    assert frame["warming_up"].dtype == bool
    assert frame["alert__ae"].tolist() == [False, True, False, True]
    assert {"domain", "event_id", "entity", "ts", "score", "threshold", "alert", "suppressed", "partition",
            "offset", "score__ae"} <= set(frame.columns)
    assert "warming_up" in ScoreLog().frame().columns


def test_score_log_keeps_each_events_champion_and_names_the_rest() -> None:
    """Rows scored under a champion keep it after a promotion; only rows logged without one take the given name."""
    log = ScoreLog()
    events, records = [NS(event_id="a", ts=1.0)], [NS(partition=0, offset=5)]
    base = {"keys": ["k1"], "scores": np.array([0.7]), "thresholds": np.array([0.5]), "flags": np.array([True]),
            "suppressed": np.array([False]), "contender_scores": {}, "contender_flags": {}}
    log("transactions", events, records, NS(**base, champions=["dense_autoencoder"]))
    log("transactions", events, records, NS(**base))  # scored before the engine named its champion
    log("transactions", events, records, NS(**base, champions=["mlp_classifier"]))
    frame = log.frame({"transactions": "mlp_classifier"})
    assert frame["detector"].tolist() == ["dense_autoencoder", "mlp_classifier", "mlp_classifier"]
    assert log.frame()["detector"].tolist() == ["dense_autoencoder", "", "mlp_classifier"]


def test_a_long_timeline_is_thinned_but_keeps_every_spike() -> None:
    rng = np.random.default_rng(0)
    n = 300_000
    ts = np.sort(rng.uniform(0, 30 * DAY, n))
    score = rng.normal(0.1, 0.01, n)
    spikes = np.arange(25) * (n // 25) + 7  # one per day or so: never two in one time bin
    score[spikes] = 5.0 + np.arange(25)
    keep = thinned(ts, score, max_points=4000)
    assert len(keep) <= 4000 and np.all(np.diff(keep) > 0), "at most 4,000 rows, in row order"
    assert set(spikes.tolist()) <= set(keep.tolist()), "no spike is thinned away"
    assert score[keep].min() == score.min(), "the lowest score stays too"
    assert thinned(ts[:100], score[:100], max_points=4000).tolist() == list(range(100)), "short series: all"
