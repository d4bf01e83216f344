"""An unreachable Kafka or Redis stops each command at start-up with one line naming it and the setting to change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

CLI = [sys.executable, "-m", "pipeline.cli"]


def _streamwarden(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}
    environment.update(env, STREAMWARDEN_KAFKA__STARTUP_TIMEOUT_S="2", STREAMWARDEN_REDIS__STARTUP_TIMEOUT_S="2",
                       PYTHONPATH=str(Path(__file__).resolve().parents[2]), COLUMNS="200")
    return subprocess.run([*CLI, *args], env=environment, cwd=cwd, capture_output=True, text=True, timeout=120)


def _one_line_naming(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # no traceback, no library chatter
    assert all(needle in lines[0] for needle in needles), lines[0]


@pytest.mark.parametrize(("command", "client"), [(["run", "--idle-timeout", "5"], "kafka-python"),
                                                 (["run", "--idle-timeout", "5"], "confluent"),
                                                 (["produce", "--limit", "5"], "kafka-python")])
def test_a_missing_broker_is_one_line_naming_the_setting(command: list[str], client: str, redis_url: str,
                                                         tmp_path: Path) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    dead = f"127.0.0.1:{free_port()}"
    result = _streamwarden([*command], {"STREAMWARDEN_KAFKA": dead, "STREAMWARDEN_REDIS_URL": redis_url,
                                        "STREAMWARDEN_RUNNER__STATE_DIR": str(tmp_path),
                                        "STREAMWARDEN_KAFKA__CLIENT": client}, tmp_path)
    _one_line_naming(result, "Kafka", dead, "kafka.bootstrap_servers", "within 2 s")


@pytest.mark.parametrize("command", [["run", "--idle-timeout", "5"], ["alerts", "tail", "--no-follow"]])
def test_a_missing_redis_is_one_line_naming_the_setting(command: list[str], kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = _streamwarden(command, {"STREAMWARDEN_KAFKA": kafka_bootstrap, "STREAMWARDEN_REDIS_URL": dead,
                                     "STREAMWARDEN_RUNNER__STATE_DIR": str(tmp_path)}, tmp_path)
    _one_line_naming(result, "Redis", dead, "redis.url")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = _streamwarden(["--debug", "alerts", "tail", "--no-follow"], {"STREAMWARDEN_REDIS_URL": dead}, tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "SinkUnavailable" in result.stderr


def test_a_backtest_of_a_kafka_range_without_a_broker_is_one_line(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = _streamwarden(["backtest", "-i", "kafka://transactions?from=0&to=10", "--report", str(tmp_path)],
                           {"STREAMWARDEN_KAFKA": dead}, tmp_path)
    _one_line_naming(result, "Kafka", dead, "kafka.bootstrap_servers")
