"""The records domain: ready-made feature vectors with no ids, scored and alerted row by row, from one command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ingest.decode import RejectReason, decode_batch
from ingest.records import Record
from ingest.schemas import FeatureRecord, encode_event
from ingest.simulator import FeatureVectorSimulator, SensorSimulator
from pipeline.cli import app
from pipeline.domains import build_processor
from pipeline.settings import load_settings

FAST = {"warmup_events": 300, "threshold_warmup": 200, "learn_every": 256, "steps_per_update": 2, "batch_size": 128,
        "params": {"dense_autoencoder": {"hidden": [16, 4]}, "mlp_classifier": {"hidden": [16]}}}


def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST.items():
        monkeypatch.setenv(f"STREAMWARDEN_RECORDS__{key.upper()}", json.dumps(value) if isinstance(value, dict)
                           else str(value))
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DEVICE", "cpu")


@pytest.fixture(scope="module")
def card_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureVectorSimulator]:
    """Like a public card-fraud set: Time (seconds since the start), V1..V28, Amount, Class; no ids."""
    sim = FeatureVectorSimulator(seed=3, n_rows=8_000, fraud_rate=0.01)
    return sim.write(tmp_path_factory.mktemp("cards") / "cards.csv"), sim


def test_one_command_scores_every_row_and_alerts_row_by_row(card_file, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, sim = card_file
    fast_env(monkeypatch)
    result = CliRunner().invoke(app, ["backtest", "--domain", "records", "--input", str(path), "--features",
                                      "V1..V28,Amount", "--labels", "Class", "--time-origin", "2024-01-01",
                                      "--report", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "r" / "scores.parquet")
    champion = scores[scores["detector"] == scores["detector"].iloc[0]]
    assert len(champion) == len(sim) and champion["score"].notna().all(), "every row is scored"
    assert champion["entity"].eq("cards").all()  # no id column: the file's stem is the one entity
    alerted = champion[champion["alert"]]
    assert 0 < len(alerted) < 0.05 * len(sim)
    assert alerted["event_id"].is_unique, "alerts are per row, not per episode"
    frauds = set(champion.loc[champion["label"] == 1, "event_id"])
    assert len(frauds) == int(sim.is_fraud.sum())
    hit_rate = len(set(alerted["event_id"]) & frauds) / len(alerted)
    assert hit_rate > 5 * sim.fraud_rate, f"alerts hold frauds at {hit_rate:.3f}, no better than chance"
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"][0]
    assert metrics["average_precision"] > 5 * sim.fraud_rate


def test_no_labels_means_none_even_with_a_label_like_column(card_file, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = card_file
    fast_env(monkeypatch)
    result = CliRunner().invoke(app, ["backtest", "--domain", "records", "--input", str(path), "--features",
                                      "V1..V28,Amount", "--no-labels", "--time-origin", "2024-01-01",
                                      "--report", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(tmp_path / "r" / "scores.parquet")["label"].isna().all()


@pytest.mark.parametrize("args, message", [
    (["--time-origin", "2024-01-01"], "name the feature columns"),
    (["--features", "V1..V28,Amount"], "looks relative"),
    (["--features", "V1..V28,Class", "--labels", "Class", "--time-origin", "2024-01-01"], "is also a feature"),
    (["--features", "V1..V28,Cost", "--time-origin", "2024-01-01"], "columns not found: ['Cost']"),
    (["--features", "V3..V1", "--time-origin", "2024-01-01"], "write a range as V1..V28"),
])
def test_each_misuse_gets_one_clear_line(card_file, args: list[str], message: str) -> None:
    path, _ = card_file
    result = CliRunner().invoke(app, ["backtest", "--domain", "records", "--input", str(path), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_single_rows_per_device_in_the_sensors_domain_say_what_they_need(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    frame = SensorSimulator(seed=1, n_devices=40, n_steps=1, channels=3).to_frame()
    path = tmp_path / "one_row_each.csv"
    frame.drop(columns=["label", "scenario"]).to_csv(path, index=False)
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DEVICE", "cpu")
    result = CliRunner().invoke(app, ["backtest", "--domain", "sensors", "--input", str(path), "--report",
                                      str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 1
    assert "windows of 30 readings per device" in result.output and "--domain records" in result.output


def record(eid: str, features: object) -> Record:
    value = json.dumps({"v": 1, "event_id": eid, "ts": 1.7e9, "entity_id": "all", "features": features}).encode()
    return Record("records", 0, 0, 0, b"all", value)


def test_records_decode_and_bad_ones_are_rejected_with_a_reason() -> None:
    result = decode_batch([record("ok", {"V1": 1.5, "Amount": 3}), record("none", {}),
                           record("text", {"V1": "high"}), record("list", [1.0]), record("nan", {"V1": 1e999})],
                          "records", clock=lambda: 1.7e9)
    assert [e.event_id for e in result.events] == ["ok"]
    assert result.events[0] == FeatureRecord("ok", 1.7e9, "all", {"V1": 1.5, "Amount": 3.0})
    reasons = [(r.reason, r.detail) for r in result.rejects]
    assert reasons[0] == (RejectReason.OUT_OF_RANGE, "features must have 1..4096 entries, has 0")
    assert reasons[1] == (RejectReason.WRONG_TYPE, "features['V1'] is string, expected a number")
    assert reasons[2] == (RejectReason.WRONG_TYPE, "features is array, expected an object")
    assert reasons[3][0] is RejectReason.NON_FINITE
    assert encode_event(result.events[0]).startswith(b'{"v":1,"event_id":"ok"')


def test_declared_features_set_the_order_and_a_missing_one_takes_its_running_mean() -> None:
    settings = load_settings(runner={"device": "cpu"}, records={**FAST, "features": ["b", "a"], "challengers": []})
    engine = build_processor(settings, "records")
    rows = [FeatureRecord(f"e{i}", 1.7e9 + i, "x", {"a": float(i % 7), "b": 10.0 + i % 3, "extra": 1.0})
            for i in range(400)]
    engine.process(rows)
    featurizer = engine.featurizer
    assert featurizer.names == ["b", "a"]
    _, inputs, _ = featurizer.update([FeatureRecord("gap", 1.7e9 + 500, "x", {"a": 100.0})])
    assert inputs["rows"][0, 1] == 100.0
    assert inputs["rows"][0, 0] == pytest.approx(np.mean([10.0 + i % 3 for i in range(400)]), rel=1e-5)
    state = featurizer.snapshot()
    fresh = build_processor(settings, "records").featurizer
    fresh.restore(state)
    assert fresh.names == ["b", "a"] and fresh.snapshot()["moments"]["n"] == state["moments"]["n"]


def test_without_declared_features_the_first_record_names_them_sorted() -> None:
    settings = load_settings(runner={"device": "cpu"}, records={**FAST, "challengers": []})
    engine = build_processor(settings, "records")
    batch = engine.process([FeatureRecord(f"e{i}", 1.7e9 + i, "x", {"z": 1.0 * i, "m": 2.0}) for i in range(10)])
    assert engine.featurizer.names == ["m", "z"] and batch.scores.shape == (10,)


def test_a_sensor_file_names_its_reading_columns_and_drops_its_label_on_the_command_line(tmp_path: Path) -> None:
    from ingest.replay import FileSource

    frame = SensorSimulator(seed=2, n_devices=1, n_steps=5, channels=3).to_frame()
    frame["time_s"] = range(len(frame))  # a relative time column that must not become a reading
    path = tmp_path / "pump.csv"
    frame.to_csv(path, index=False)
    channels = [c for c in frame.columns if c not in ("event_id", "ts", "device_id", "label", "scenario", "time_s")]
    source = FileSource(path, "sensors", columns={"features": channels[:2]}, labels=False)
    records = [json.loads(r.value) for r in source.poll(10, 0)]
    assert set(records[0]["readings"]) == set(channels[:2]) and source.labels is None
