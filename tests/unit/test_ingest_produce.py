"""produce_events / events_from_file / events_from_simulator with a fake producer; the token bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ingest.produce import (
    ProduceReport,
    RateLimiter,
    events_from_file,
    events_from_simulator,
    produce_events,
    produce_in_time_order,
)
from ingest.schemas import Label, SensorReading, Transaction


class FakeProducer:
    def __init__(self, fail_every: int = 0) -> None:
        self.messages: list[tuple[str, bytes | None, bytes]] = []
        self.sent = 0
        self.failed = 0
        self.fail_every = fail_every
        self.flushes = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.messages.append((topic, key, value))
        if self.fail_every and len(self.messages) % self.fail_every == 0:
            self.failed += 1
        else:
            self.sent += 1

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


def tx(i: int) -> Transaction:
    return Transaction(f"e{i}", 1.7e9 + i, f"card-{i % 3}", "t1", 1.0 + i)


def test_sends_encoded_events_keyed_by_domain_key() -> None:
    producer = FakeProducer()
    report = produce_events([tx(i) for i in range(10)], producer, "payments", "transactions", progress=False)
    assert report == ProduceReport(sent=10, failed=0, elapsed_s=report.elapsed_s)
    assert [m[1] for m in producer.messages[:4]] == [b"card-0", b"card-1", b"card-2", b"card-0"]
    assert json.loads(producer.messages[0][2])["event_id"] == "e0"
    assert {m[0] for m in producer.messages} == {"payments"}
    assert producer.flushes >= 1


def test_key_field_choice_and_no_key() -> None:
    producer = FakeProducer()
    produce_events([tx(1)], producer, "t", "transactions", key_field="terminal_id", progress=False)
    produce_events([tx(2)], producer, "t", "transactions", key_field="none", progress=False)
    assert [m[1] for m in producer.messages] == [b"t1", None]


def test_failures_are_reported() -> None:
    report = produce_events(
        [tx(i) for i in range(9)], FakeProducer(fail_every=3), "t", "transactions", progress=False
    )
    assert (report.sent, report.failed) == (6, 3)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_paces_sending() -> None:
    fake = FakeTime()
    limiter = RateLimiter(200, burst=10, clock=fake.clock, sleep=fake.sleep)
    report = produce_events([tx(i) for i in range(60)], FakeProducer(), "t", "transactions", progress=False,
                            limiter=limiter)  # fmt: skip
    assert report.sent == 60
    assert fake.now == pytest.approx(50 / 200)  # 10 from the burst, then 50 at 200/s


def test_token_bucket_with_a_fake_clock() -> None:
    fake = FakeTime()
    bucket = RateLimiter(10, burst=2, clock=fake.clock, sleep=fake.sleep)
    for _ in range(12):
        bucket.acquire()
    assert fake.now == pytest.approx(1.0)  # 2 from the burst, then 10 at 10/s
    bucket.acquire(5)  # more than the burst: waits for a full bucket, then goes into debt
    assert fake.now == pytest.approx(1.2)
    bucket.acquire()
    assert fake.now == pytest.approx(1.2 + 0.4)
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    report = produce_events([tx(i) for i in range(300)], FakeProducer(), "t", "transactions", progress=True)
    assert report.sent == 300
    assert "produce t" in capsys.readouterr().err


def test_events_from_file_with_mapping_skips_invalid_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "when": [1.7e9, 1.7e9 + 1, 1.7e9 + 2],
            "card": ["c", "c", "d"],
            "term": "t",
            "amt": [1.0, -2.0, 3.0],
        }
    ).to_csv(path, index=False)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("event_id: id\nts: when\ncard_id: card\nterminal_id: term\namount: amt\n")
    events = list(events_from_file(path, "transactions", columns=mapping))
    assert [e.event_id for e in events] == ["a", "c"]
    assert "out_of_range" in caplog.text


def test_events_from_simulator_domains() -> None:
    txs = list(events_from_simulator("transactions", seed=1, limit=5, n_customers=30, n_terminals=30, days=2))
    assert len(txs) == 5 and all(isinstance(e, Transaction) for e in txs)
    sensors = list(events_from_simulator("sensors", seed=1, limit=4, n_devices=2, n_steps=10))
    assert len(sensors) == 4 and isinstance(sensors[0], SensorReading)
    labels = list(
        events_from_simulator("labels", seed=1, n_customers=200, days=20, compromised_terminals_per_day=1)
    )
    assert labels and all(isinstance(x, Label) and x.label == 1 for x in labels)


def test_simulated_labels_match_the_transactions_of_the_same_run() -> None:
    sizes = dict(seed=2, n_customers=100, n_terminals=100, days=10, compromised_terminals_per_day=1)
    txs = {e.event_id for e in events_from_simulator("transactions", run="r1", **sizes)}
    labels = [x.event_id for x in events_from_simulator("labels", run="r1", **sizes)]
    assert labels and set(labels) <= txs
    again = {e.event_id for e in events_from_simulator("transactions", **sizes)}
    assert again.isdisjoint(txs)


def test_labels_are_sent_among_the_transactions_of_their_reveal_time() -> None:
    """A chargeback revealed at t reaches its topic after every transaction before t and before any after it,
    keyed by the event it labels, each stream to its own topic."""
    producer = FakeProducer()
    transactions = [tx(i) for i in range(6)]
    labels = [Label("e0", 1, 1.7e9 + 2.5), Label("e1", 1, 1.7e9 + 4.0), Label("e5", 1, 1.7e9 + 100)]
    sent = produce_in_time_order([("payments", "transactions", transactions), ("chargebacks", "labels", labels)],
                                 producer)
    assert sent == {"payments": 6, "chargebacks": 3}
    order = [(topic, key) for topic, key, _ in producer.messages]
    assert order == [("payments", b"card-0"), ("payments", b"card-1"), ("payments", b"card-2"),
                     ("chargebacks", b"e0"), ("payments", b"card-0"),
                     ("payments", b"card-1"),  # the transaction at 4.0 goes before the label revealed at 4.0
                     ("chargebacks", b"e1"), ("payments", b"card-2"), ("chargebacks", b"e5")]
    assert json.loads(producer.messages[3][2])["label"] == 1
    assert producer.flushes >= 1
