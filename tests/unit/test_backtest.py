"""Backtest on files: any column names via a mapping, delayed labels, metrics, plots, report, per-event scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ingest.records import Record
from ingest.schemas import Transaction, encode_event
from ingest.simulator import SensorSimulator, TransactionSimulator
from pipeline.backtest import DelayedLabels, KafkaInput, parse_input, run_backtest
from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings
from tests.small_models import SMALL_PARAMS

TINY = {"warmup_events": 64, "threshold_warmup": 64, "threshold_quantile": 0.97, "learn_every": 32, "params": SMALL_PARAMS, "auto_promote": False,
        "threshold_window": 400, "batch_size": 32, "steps_per_update": 1}


def tiny_settings() -> Settings:
    return load_settings(runner={"device": "cpu"}, transactions=TINY,
                         sensors={**TINY, "detector": "window_autoencoder", "window": 8, "alarm_m": 1, "alarm_n": 1})


@pytest.fixture(scope="module")
def bank_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransactionSimulator]:
    """Simulated transactions saved with a bank's own column names, as CSV."""
    sim = TransactionSimulator(seed=11, n_customers=50, n_terminals=50, days=10, amount_spikes_per_day=5.0)
    frame = sim.to_frame().rename(columns={"event_id": "TRANSACTION_ID", "ts": "TX_DATETIME", "card_id": "CUSTOMER_ID",
                                           "terminal_id": "TERMINAL_ID", "amount": "TX_AMOUNT", "label": "TX_FRAUD"})
    frame["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"], unit="s")
    path = tmp_path_factory.mktemp("bank") / "bank.csv"
    frame.to_csv(path, index=False)
    return path, sim


MAPPING = {"event_id": "TRANSACTION_ID", "ts": "TX_DATETIME", "card_id": "CUSTOMER_ID", "terminal_id": "TERMINAL_ID",
           "amount": "TX_AMOUNT", "label": "TX_FRAUD"}


def test_a_mapped_csv_is_scored_progressively_and_reported(bank_file: tuple[Path, Any], tmp_path: Path) -> None:
    path, sim = bank_file
    result = run_backtest(tiny_settings(), str(path), domain="transactions", columns=MAPPING, label_delay_s=86_400.0,
                          report_dir=tmp_path / "report")

    assert result.stats.events == len(sim)
    assert result.labels_revealed > 0
    scores = pd.read_parquet(tmp_path / "report" / "scores.parquet")
    assert {"event_id", "entity", "ts", "score", "threshold", "alert", "label"} <= set(scores.columns)
    assert len(scores) == len(sim) and scores["label"].sum() == sim.is_fraud.sum()
    assert scores["alert"].sum() == len(result.alerts) > 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"][0]
    for key in ("roc_auc", "average_precision", "precision", "recall", "f1", "far_pct", "mar_pct", "card_precision@100",
                "alerts_per_hour", "tp", "fp", "tn", "fn"):
        assert key in metrics
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    assert metrics["tp"] + metrics["fn"] == sim.is_fraud.sum()
    html = (tmp_path / "report" / "index.html").read_text()
    for png in ("transactions_timeline.png", "transactions_pr_roc.png", "transactions_top_entities.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert png in html


def test_sensor_backtest_reports_nab_and_compares_detectors(tmp_path: Path) -> None:
    sim = SensorSimulator(seed=2, n_devices=2, n_steps=350, channels=3, spikes_per_1000=10.0, level_shifts_per_1000=4.0)
    path = sim.write(tmp_path / "sensors.parquet")
    result = run_backtest(tiny_settings(), str(path), domain="sensors", report_dir=tmp_path / "r",
                          compare=["window_autoencoder", "lstm_forecaster"])

    rows = {m["detector"]: m for m in result.metrics}
    assert set(rows) == {"window_autoencoder", "lstm_forecaster", "reading_profile"}  # the cold-start rule too
    assert "nab_standard" in rows["window_autoencoder"]
    assert rows["window_autoencoder"]["positives"] == rows["lstm_forecaster"]["positives"] > 0
    assert result.scores["score__lstm_forecaster"].notna().sum() > 0


def test_labels_are_revealed_only_after_the_delay_and_only_frauds() -> None:
    events = [Transaction(event_id=f"e{i}", ts=1.7e9 + 3600.0 * i, card_id="c", terminal_id="t", amount=1.0) for i in range(10)]
    records = [Record("tx", 0, i, -1, b"c", encode_event(e)) for i, e in enumerate(events)]

    class Source:
        exhausted = False

        def __init__(self) -> None:
            self.batches = [records[:5], records[5:]]

        def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
            return self.batches.pop(0) if self.batches else []

    wrapped = DelayedLabels(Source(), positives={"e0", "e6", "e8"}, delay_s=3 * 3600.0)
    first, second = wrapped.poll(100, 0), wrapped.poll(100, 0)
    assert [r.key for r in first if r.topic == "labels"] == [b"e0"]  # due at t3, the batch reaches t4
    assert [r.key for r in second if r.topic == "labels"] == [b"e6"]  # due at t9 = the last event; e8 due at t11
    assert [r.offset for r in first + second if r.topic == "tx"] == list(range(10))
    assert wrapped.revealed == 2


def test_durations() -> None:
    from pipeline.cli import parse_duration

    assert [parse_duration(t) for t in ("7d", "12h", "30m", "90", "1.5s", "2w")] == [604800, 43200, 1800, 90, 1.5, 1209600]


def test_parse_input() -> None:
    spec = parse_input("kafka://payments?from=10&to=20")
    assert spec == KafkaInput("payments", 10, 20, "offset", "labels")
    spec = parse_input("kafka://payments?from=2024-01-01&labels=chargebacks")
    assert isinstance(spec, KafkaInput) and spec.by == "event_time" and spec.start == 1_704_067_200_000
    assert spec.labels_topic == "chargebacks"
    assert parse_input("kafka://payments?to=2024-01-05T00:00:00%2B01:00&time=event") == KafkaInput(
        "payments", None, 1_704_409_200_000, "event_time", "labels")
    spec = parse_input("kafka://payments?from=2024-01-01&to=2024-01-05&time=broker&labels=")
    assert spec == KafkaInput("payments", 1_704_067_200_000, 1_704_412_800_000, "timestamp", None)
    with pytest.raises(ConfigError, match="time=wall must be event"):
        parse_input("kafka://payments?from=2024-01-01&time=wall")
    with pytest.raises(ConfigError, match="not offsets"):
        parse_input("kafka://payments?from=5&time=broker")
    with pytest.raises(ConfigError, match="unknown parameter"):
        parse_input("kafka://payments?form=1")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_input("/nope/missing.csv")


def _backtest_cli(path: Path, report: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    """`streamwarden backtest` of the bank file with the TINY transactions settings (plus `settings`)."""
    for key, value in {**TINY, **settings}.items():
        monkeypatch.setenv(f"STREAMWARDEN_TRANSACTIONS__{key.upper()}",
                           json.dumps(value) if isinstance(value, dict | bool) else str(value))
    columns = ",".join(f"{k}={v}" for k, v in MAPPING.items())
    result = CliRunner().invoke(app, ["backtest", "--input", str(path), "--columns", columns, "--label-delay", "1d",
                                      "--report", str(report), "--no-progress"])
    assert result.exit_code == 0, result.output
    return result


def test_backtest_command_line(bank_file: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _backtest_cli(bank_file[0], tmp_path / "cli", monkeypatch)
    assert (tmp_path / "cli" / "index.html").exists()
    assert "ROC AUC" in result.output and "report:" in result.output
    assert np.isfinite(pd.read_parquet(tmp_path / "cli" / "scores.parquet")["score"]).all()


def test_a_replay_shorter_than_the_warm_up_says_so_and_counts_its_alerts(
        bank_file: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event in the models' warm-up: the table scores nothing, and the command says why and how many alerts
    (the cold-start rule's) the report holds, instead of a table of zeros alone."""
    path, sim = bank_file
    result = _backtest_cli(path, tmp_path / "cli", monkeypatch, warmup_events=10 * len(sim))
    alerts = int(pd.read_parquet(tmp_path / "cli" / "scores.parquet")["alert"].sum())
    assert alerts > 0, "the card profile alerts during warm-up"
    said = " ".join(result.output.split())
    assert f"all {len(sim)} events fell in the models' warm-up" in said and f"they raised {alerts} alert(s)" in said
