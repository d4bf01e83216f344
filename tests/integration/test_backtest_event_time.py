"""kafka:// backtest ranges with date-times select by the events' own ts by default, by broker time on request.

Against the real broker: records are produced now (broker timestamps = now) and carry event times in 2024.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from ingest.producer import EventProducer
from ingest.records import Record
from ingest.replay import KafkaRangeSource
from ingest.schemas import Transaction, encode_event
from pipeline.backtest import run_backtest
from pipeline.cli import app
from pipeline.settings import load_settings
from tests.unit.test_backtest import TINY

pytestmark = pytest.mark.kafka

START = 1_703_980_800.0  # 2023-12-31T00:00:00Z
JAN_1, JAN_5 = 1_704_067_200.0, 1_704_412_800.0
RANGE = "from=2024-01-01&to=2024-01-05"
NO_TS = [b'{"v":1,"event_id":"no-ts","card_id":"c1","terminal_id":"t1","amount":1.0}',
         b'{"v":1,"event_id":"text-ts","ts":"2024-01-02","card_id":"c1","terminal_id":"t1","amount":1.0}']


def produce_2024(bootstrap: str, topic: str) -> list[Transaction]:
    """An event every hour from 2023-12-31 to 2024-01-06 (exclusive), then two without a numeric ts."""
    events = [Transaction(event_id=f"e{i}", ts=START + 3600.0 * i, card_id=f"c{i % 9}", terminal_id=f"t{i % 4}",
                          amount=5.0 + i % 17) for i in range(6 * 24)]
    with EventProducer(bootstrap) as producer:
        for event in events:
            producer.send(topic, event.card_id.encode(), encode_event(event))
        for value in NO_TS:
            producer.send(topic, b"c1", value)
        producer.flush()
    return events


def drain(source: KafkaRangeSource) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + 30
    while not source.exhausted and time.monotonic() < deadline:
        out.extend(source.poll(100, 200))
    assert source.exhausted
    return out


def test_date_time_bounds_select_by_event_time_unless_broker_time_is_asked_for(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("history", partitions=2)
    events = produce_2024(kafka_bootstrap, topic)
    inside = {e.event_id for e in events if JAN_1 <= e.ts < JAN_5}
    assert len(inside) == 96  # 2024-01-05T00:00 itself is out: [from, to)

    with KafkaRangeSource(kafka_bootstrap, topic, int(JAN_1 * 1000), int(JAN_5 * 1000), by="event_time") as source:
        records = drain(source)
        assert source.skipped == len(events) - len(inside)
    values = {json.loads(r.value)["event_id"] for r in records}
    assert values == inside | {"no-ts", "text-ts"}  # no ts to select by: passed on, so the decoder rejects them

    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, runner={"device": "cpu"},
                             transactions=TINY)
    by_event = run_backtest(settings, f"kafka://{topic}?{RANGE}&labels=")
    assert by_event.stats.events == 96 and set(by_event.scores["event_id"]) == inside
    assert by_event.rejects == 2 and by_event.problem is None

    by_broker = run_backtest(settings, f"kafka://{topic}?{RANGE}&time=broker&labels=")
    assert by_broker.stats.events == 0 and by_broker.rejects == 0
    assert by_broker.problem is not None and by_broker.problem.startswith("scored no events: the input held none")
    assert "time=broker" in by_broker.problem


def test_the_command_exits_1_when_the_range_holds_no_event(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = topic_factory("history", partitions=1)
    produce_2024(kafka_bootstrap, topic)
    monkeypatch.setenv("STREAMWARDEN_KAFKA", kafka_bootstrap)
    monkeypatch.setenv("STREAMWARDEN_RUNNER__DEVICE", "cpu")
    for key, value in TINY.items():
        monkeypatch.setenv(f"STREAMWARDEN_TRANSACTIONS__{key.upper()}",
                           json.dumps(value) if isinstance(value, dict | bool) else str(value))

    def backtest(query: str) -> object:
        return CliRunner().invoke(app, ["backtest", "--input", f"kafka://{topic}?{query}&labels=", "--no-progress",
                                        "--report", f"{tmp_path}/{len(query)}"])

    empty = backtest("from=2025-01-01&to=2025-02-01")
    assert empty.exit_code == 1, empty.output  # type: ignore[attr-defined]
    stderr = " ".join(empty.stderr.split())  # type: ignore[attr-defined]
    assert f"scored no events: all 2 input events were rejected (144 record(s) of {topic} left out: ts outside" \
        in stderr
    assert "missing_field x1, e.g. missing required field(s): ts" in stderr
    assert backtest(RANGE).exit_code == 0  # type: ignore[attr-defined]
