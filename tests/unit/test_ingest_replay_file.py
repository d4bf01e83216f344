"""FileSource: CSV/Parquet replay with column mapping, time order, labels and pacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingest.decode import decode_batch
from ingest.errors import ReplaySourceError
from ingest.replay import FileSource
from ingest.schemas import SensorReading, Transaction


def drain(source: FileSource, domain: str, batch: int = 100) -> tuple[list, list]:
    events, records = [], []
    polls = 0
    while not source.exhausted:
        polls += 1
        assert polls < 10_000
        got = source.poll(batch, 10)
        records.extend(got)
        result = decode_batch(got, domain)
        assert result.rejects == []
        events.extend(result.events)
    assert source.poll(batch, 0) == []
    return events, records


@pytest.fixture
def handbook_like(tmp_path: Path) -> Path:
    """Columns named like the Fraud Detection Handbook's, rows out of time order."""
    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": [2, 0, 1, 3],
            "TX_DATETIME": ["2018-04-01 00:02:00", "2018-04-01 00:00:31", "2018-04-01 00:01:00", None],
            "CUSTOMER_ID": [596, 4961, 2, 7],
            "TERMINAL_ID": ["03219", "3412", "1365", "1"],
            "TX_AMOUNT": [57.16, 81.51, 146.0, 1.0],
            "TX_FRAUD": [0, 1, 0, 0],
        }
    )
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    return path


HANDBOOK = {
    "event_id": "TRANSACTION_ID",
    "ts": "TX_DATETIME",
    "card_id": "CUSTOMER_ID",
    "terminal_id": "TERMINAL_ID",
    "amount": "TX_AMOUNT",
    "label": "TX_FRAUD",
}


def test_mapping_sorting_ids_and_labels(handbook_like: Path) -> None:
    source = FileSource(handbook_like, "transactions", columns=HANDBOOK)
    assert len(source) == 4
    records = source.poll(10, 0)
    assert [r.offset for r in records] == [0, 1, 2, 3]
    assert {(r.topic, r.partition) for r in records} == {("transactions", 0)}
    result = decode_batch(records, "transactions")
    assert [e.event_id for e in result.events] == ["0", "1", "2"]  # time order; ints as strings
    assert result.events[0] == Transaction("0", 1522540831.0, "4961", "3412", 81.51)
    assert result.events[2].terminal_id == "03219"  # id columns read as text: leading zeros kept
    assert records[0].key == b"4961" and records[0].timestamp_ms == 1522540831000
    # the row without a time goes last and is explained by the decoder, not dropped
    assert [r.reason.value for r in result.rejects] == ["missing_field"]
    assert records[3].timestamp_ms == -1
    assert source.labels is not None and source.labels.tolist() == [1, 0, 0, 0]
    assert source.labels_by_event_id == {"0": 1, "1": 0, "2": 0, "3": 0}
    assert source.label_of(records[0]) == 1
    assert source.exhausted and source.poll(10, 0) == []


def test_yaml_mapping_and_topic_override(handbook_like: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "columns.yaml"
    mapping.write_text("transactions:\n" + "".join(f"  {k}: {v}\n" for k, v in HANDBOOK.items()))
    source = FileSource(handbook_like, "transactions", columns=mapping, topic="replayed")
    assert {r.topic for r in source.poll(10, 0)} == {"replayed"}


def test_missing_or_unknown_columns_are_clear_errors(handbook_like: Path) -> None:
    with pytest.raises(ReplaySourceError, match="TX_AMOUNT_X"):
        FileSource(handbook_like, "transactions", columns={**HANDBOOK, "amount": "TX_AMOUNT_X"})
    with pytest.raises(ReplaySourceError, match="card_id"):
        FileSource(handbook_like, "transactions", columns={"ts": "TX_DATETIME"})
    with pytest.raises(ReplaySourceError, match="unknown wire field"):
        FileSource(handbook_like, "transactions", columns={**HANDBOOK, "colour": "x"})
    with pytest.raises(ReplaySourceError, match="cannot read"):
        FileSource(handbook_like.with_name("absent.csv"), "transactions")


def _sensor_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "datetime": pd.date_range("2024-03-01", periods=6, freq="1s"),
            "Accelerometer1RMS": [0.1, 0.2, 0.3, np.nan, 0.5, 0.6],
            "Accelerometer2RMS": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            "Pressure": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
            "anomaly": [0, 0, 1, 1, 0, 0],
            "changepoint": [0, 0, 1, 0, 0, 0],
        }
    )


def test_sensor_readings_default_to_other_numeric_columns_skab_style(tmp_path: Path) -> None:
    path = tmp_path / "valve1.csv"
    _sensor_frame().to_csv(path, sep=";", index=False)  # SKAB files are semicolon separated
    source = FileSource(path, "sensors", columns={"ts": "datetime", "label": "anomaly"})
    events, records = drain(source, "sensors", batch=4)
    assert events[0] == SensorReading(
        "valve1-0",
        1709251200.0,
        "valve1",
        {"Accelerometer1RMS": 0.1, "Accelerometer2RMS": 2.0, "Pressure": 1.0},
    )
    assert events[3].readings == {
        "Accelerometer2RMS": 2.0,
        "Pressure": 1.3,
    }  # a missing cell is left out, not NaN
    assert source.labels.tolist() == [0, 0, 1, 1, 0, 0]  # type: ignore[union-attr]
    assert records[0].key == b"valve1"


@pytest.mark.parametrize(
    "readings, channels",
    [
        (["Pressure"], ["Pressure"]),
        ({"p": "Pressure"}, ["p"]),
        ("Accelerometer", ["1RMS", "2RMS"]),
    ],
)
def test_sensor_readings_from_list_mapping_or_prefix(
    tmp_path: Path, readings: object, channels: list[str]
) -> None:
    path = tmp_path / "s.parquet"
    _sensor_frame().to_parquet(path)
    source = FileSource(path, "sensors", columns={"ts": "datetime", "readings": readings})
    events, _ = drain(source, "sensors")
    assert sorted(events[0].readings) == channels


def test_epoch_milliseconds_are_recognised(tmp_path: Path) -> None:
    path = tmp_path / "ms.csv"
    pd.DataFrame({"event_id": ["a"], "ts": [1_700_000_000_500], "device_id": ["d"], "x": [1.0]}).to_csv(
        path, index=False
    )
    events, _ = drain(FileSource(path, "sensors"), "sensors")
    assert events[0].ts == 1_700_000_000.5


def test_labels_domain_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"event_id": ["e2", "e1"], "label": [1, 0], "ts": [1.7e9 + 5, 1.7e9]}).to_csv(
        path, index=False
    )
    events, records = drain(FileSource(path, "labels"), "labels")
    assert [(e.event_id, e.label) for e in events] == [("e1", 0), ("e2", 1)]
    assert records[0].key == b"e1"


def test_speedup_paces_by_event_time(tmp_path: Path) -> None:
    path = tmp_path / "paced.csv"
    pd.DataFrame(
        {"event_id": list("abcd"), "ts": [1.7e9, 1.7e9, 1.7e9 + 2, 1.7e9 + 4], "device_id": "d", "x": 1.0}
    ).to_csv(path, index=False)
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    source = FileSource(
        path, "sensors", speedup=20.0, clock=lambda: now[0], sleep=sleep
    )  # 4 s of event time in 0.2 s
    assert [r.offset for r in source.poll(100, 0)] == [0, 1]  # only the rows due now
    assert source.poll(100, 0) == []  # nothing due yet, and no time to wait
    assert now[0] == 100.0
    assert [r.offset for r in source.poll(100, 1000)] == [2]  # waits until row 2 is due: 2 s / 20
    assert now[0] == pytest.approx(100.1)
    assert source.poll(100, 50) == []  # row 3 is due 0.1 s later, more than the 50 ms timeout
    assert now[0] == pytest.approx(100.15)
    assert [r.offset for r in source.poll(100, 1000)] == [3]
    assert now[0] == pytest.approx(100.2) and source.exhausted
    fast = FileSource(path, "sensors")
    assert len(fast.poll(100, 0)) == 4


def test_commit_is_noop_and_seek_pause_resume(handbook_like: Path) -> None:
    source = FileSource(handbook_like, "transactions", columns=HANDBOOK)
    source.commit({("transactions", 0): 2})
    assert source.positions() == {("transactions", 0): 0}
    source.seek({("transactions", 0): 2})
    assert [r.offset for r in source.poll(10, 0)] == [2, 3]
    source.seek({("transactions", 0): 0})
    source.pause()
    assert source.poll(10, 0) == [] and not source.exhausted
    source.resume()
    assert len(source.poll(10, 0)) == 4
    assert source.end_offsets() == {("transactions", 0): 4}
    assert source.assignment() == {("transactions", 0)}
