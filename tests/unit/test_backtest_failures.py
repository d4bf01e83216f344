"""A backtest that scores nothing, or rejects too much of its input, says why and exits 1 (report still written)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ingest.decode import Reject, RejectReason
from ingest.records import Record
from pipeline.backtest import find_problem, run_backtest
from pipeline.cli import app
from tests.unit.test_backtest import TINY, tiny_settings


def write_csv(path: Path, good: int, bad: int, bad_ts: float | None = None) -> Path:
    """`good` valid transactions, then `bad` ones with a `ts` in 1985, before the earliest accepted time (2000)."""
    rows = [{"event_id": f"g{i}", "ts": 1.7e9 + 60.0 * i, "card_id": f"c{i % 7}", "terminal_id": f"t{i % 5}",
             "amount": 10.0 + i % 13} for i in range(good)]
    rows += [{"event_id": f"b{i}", "ts": 5e8 + i, "card_id": "c0", "terminal_id": "t0", "amount": 5.0}
             for i in range(bad)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TINY.items():
        monkeypatch.setenv(f"STREAMWARDEN_TRANSACTIONS__{key.upper()}",
                           json.dumps(value) if isinstance(value, dict | bool) else str(value))
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DEVICE", "cpu")


def backtest(path: Path, report: Path) -> object:
    return CliRunner().invoke(app, ["backtest", "--input", str(path), "--report", str(report), "--no-progress"])


def test_all_rejected_exits_1_with_the_reason_and_still_writes_the_report(tiny_env: None, tmp_path: Path) -> None:
    result = backtest(write_csv(tmp_path / "too_old.csv", good=0, bad=300), tmp_path / "r")

    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    stderr = " ".join(result.stderr.split())  # type: ignore[attr-defined]
    assert "scored no events: all 300 input events were rejected" in stderr
    assert "out_of_range x300, e.g. ts 500000000.0 is before the earliest accepted time" in stderr
    summary = json.loads((tmp_path / "r" / "metrics.json").read_text())["summary"]
    assert summary["events"] == 0 and summary["reject reasons"] == "out_of_range: 300"


def test_too_many_rejects_exit_1_naming_the_setting_and_a_raised_share_passes(
    tiny_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "mixed.csv", good=80, bad=120)

    failed = backtest(path, tmp_path / "r1")
    assert failed.exit_code == 1, failed.output  # type: ignore[attr-defined]
    stderr = " ".join(failed.stderr.split())  # type: ignore[attr-defined]
    assert "rejected 120 of 200 input events (60%), more than backtest.max_reject_share = 0.5" in stderr
    assert "STREAMWARDEN_BACKTEST__MAX_REJECT_SHARE" in stderr and "out_of_range x120" in stderr
    assert (tmp_path / "r1" / "index.html").exists()

    monkeypatch.setenv("STREAMWARDEN_BACKTEST__MAX_REJECT_SHARE", "0.7")
    passed = backtest(path, tmp_path / "r2")
    assert passed.exit_code == 0, passed.output  # type: ignore[attr-defined]
    assert passed.stderr == ""  # type: ignore[attr-defined]


def test_a_clean_backtest_has_no_problem(tmp_path: Path) -> None:
    result = run_backtest(tiny_settings(), str(write_csv(tmp_path / "clean.csv", good=100, bad=0)))
    assert result.stats.events == 100 and result.problem is None


def test_find_problem() -> None:
    def rejects(n: int, reason: RejectReason, detail: str) -> list[Reject]:
        return [Reject(Record("t", 0, i, -1, None, b"x"), reason, detail) for i in range(n)]

    assert find_problem(10, [], 0.5) is None
    assert find_problem(5, rejects(5, RejectReason.NOT_JSON, "bad"), 0.5) is None  # exactly the share
    assert find_problem(0, [], 0.5, "3 left out") == "scored no events: the input held none (3 left out)"
    mixed = rejects(4, RejectReason.MISSING_FIELD, "no card_id") + rejects(6, RejectReason.NOT_JSON, "line 1")
    message = find_problem(10, mixed, 0.25)
    assert message is not None
    assert message.startswith("rejected 10 of 20 input events (50%), more than backtest.max_reject_share = 0.25")
    assert message.endswith("most common: not_json x6, e.g. line 1; missing_field x4, e.g. no card_id")
