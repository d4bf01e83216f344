"""The runner loop with in-memory fakes: alerts, rejects, commits, backpressure, stop, checkpoints, labels."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.records import Record
from ingest.schemas import Label, Transaction, encode_event
from pipeline.runner import DomainBatch, Runner, RunnerConfig
from sinks.alert import make_alert_id
from sinks.errors import SinkUnavailable
from sinks.memory_sink import MemorySink

TOPIC = "tx"
LABELS = "labels"
T0 = 1.75e9


def tx_records(n: int, partitions: int = 2, bad: tuple[int, ...] = ()) -> list[Record]:
    """Transactions spread over partitions; every 5th has amount 500 (the fake flags amount >= 100)."""
    records, next_offset = [], [0] * partitions
    for i in range(n):
        p = i % partitions
        tx = Transaction(event_id=f"e{i}", ts=T0 + i, card_id=f"c{i % 3}", terminal_id="t", amount=500.0 if i % 5 == 0 else 10.0)
        value = b"{not json" if i in bad else encode_event(tx)
        records.append(Record(TOPIC, p, next_offset[p], -1, tx.card_id.encode(), value))
        next_offset[p] += 1
    return records


class FakeSource:
    """Replays records, honours pause/resume, remembers commits and seeks."""

    def __init__(self, records: list[Record], log: list[tuple[str, Any]] | None = None) -> None:
        self.records = list(records)
        self.pos = 0
        self.paused: set[tuple[str, int]] = set()
        self.committed: dict[tuple[str, int], int] = {}
        self.seeks: list[dict[tuple[str, int], int]] = []
        self.log = log if log is not None else []

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.records)

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        if self.paused:
            return []
        out = self.records[self.pos : self.pos + max_records]
        self.pos += len(out)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.log.append(("commit", dict(offsets)))
        self.committed.update(offsets)

    def assignment(self) -> set[tuple[str, int]]:
        return {(r.topic, r.partition) for r in self.records}

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.log.append(("pause", sorted(partitions)))
        self.paused |= set(partitions)

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.log.append(("resume", sorted(partitions)))
        self.paused -= set(partitions)

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        self.seeks.append(dict(offsets))


class FlakySink(MemorySink):
    """A MemorySink whose flush fails `failures` times with SinkUnavailable (-1: always)."""

    def __init__(self, failures: int = 0, log: list[tuple[str, Any]] | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.log = log if log is not None else []

    def flush(self) -> int:
        if self.failures:
            self.failures -= 1 if self.failures > 0 else 0
            self.log.append(("flush_failed", self.pending))
            raise SinkUnavailable("redis down")
        self.log.append(("flush", self.pending))
        return super().flush()


class ListDLQ:
    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.sent: list[Any] = []

    def add(self, rejects: list[Any]) -> None:
        self.pending.extend(rejects)

    def flush(self) -> None:
        self.sent.extend(self.pending)
        self.pending.clear()


class AmountProcessor:
    """Scores = amount; flags amount >= 100; counts events in its state."""

    domain = "transactions"
    detector_name = "amount-rule"
    model_version = "v1"

    def __init__(self, on_process: Any = None) -> None:
        self.seen = 0
        self.labels: list[Any] = []
        self.on_process = on_process

    def process(self, events: list[Any]) -> DomainBatch:
        scores = np.array([e.amount for e in events], dtype=np.float64)
        flags = scores >= 100
        self.seen += len(events)
        if self.on_process:
            self.on_process()
        return DomainBatch(
            keys=[e.card_id for e in events], scores=scores, thresholds=np.full(len(events), 100.0), flags=flags,
            suppressed=np.zeros(len(events), bool),
            explanations={int(i): [("amount", float(scores[i]))] for i in np.flatnonzero(flags)},
        )

    def apply_labels(self, labels: list[Any]) -> None:
        self.labels.extend(labels)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


def make_runner(source: Any, sink: Any, dlq: Any = None, processor: Any = None, **config: Any) -> Runner:
    config.setdefault("commit_interval_s", 0.0)
    config.setdefault("checkpoint_interval_s", 0.0)
    config.setdefault("max_records", 7)
    config.setdefault("poll_timeout_ms", 0)
    config.setdefault("flush_alerts_every_batch", False)  # these tests follow the commit-time flush
    return Runner(source, sink, dlq or ListDLQ(), {TOPIC: processor or AmountProcessor()}, labels_topic=LABELS,
                  config=RunnerConfig(**config), sleep=lambda s: None)


def test_flagged_events_become_alerts_rejects_go_to_dlq_and_offsets_are_committed() -> None:
    records = tx_records(40, partitions=2, bad=(3, 17))
    source, sink, dlq = FakeSource(records), MemorySink(), ListDLQ()
    stats = make_runner(source, sink, dlq).run()

    flagged = [f"e{i}" for i in range(40) if i % 5 == 0]
    assert [a.event_id for a in sink.alerts] == flagged
    assert all(a.alert_id == make_alert_id(a.event_id, "amount-rule", "v1") for a in sink.alerts)
    assert sink.alerts[0].top_features == [("amount", 500.0)] and sink.alerts[0].threshold == 100.0
    assert sorted(r.record.offset for r in dlq.sent) == [1, 8] and all(r.record.partition == 1 for r in dlq.sent)
    assert source.committed == {(TOPIC, 0): 20, (TOPIC, 1): 20}
    assert (stats.events, stats.rejects, stats.alerts) == (38, 2, 8)


def test_backpressure_pauses_retries_and_commits_only_after_the_flush() -> None:
    log: list[tuple[str, Any]] = []
    source, sink = FakeSource(tx_records(10, partitions=1), log), FlakySink(failures=3, log=log)
    make_runner(source, sink, max_records=10).run()

    kinds = [k for k, _ in log]
    first_commit = kinds.index("commit")
    assert kinds[:first_commit] == ["flush_failed", "pause", "flush_failed", "flush_failed", "flush", "resume"]
    assert [a.event_id for a in sink.alerts] == ["e0", "e5"]
    assert source.committed == {(TOPIC, 0): 10}
    assert not source.paused


def test_stopping_while_the_sink_is_down_commits_nothing_and_writes_no_checkpoint(tmp_path: Path) -> None:
    source, sink = FakeSource(tx_records(10, partitions=1)), FlakySink(failures=-1)
    runner = make_runner(source, sink, checkpoint_path=tmp_path / "ckpt.pt")
    runner.sleep = lambda s: runner.request_stop()
    runner.run()

    assert source.committed == {}
    assert sink.pending > 0 and sink.alerts == []
    assert not (tmp_path / "ckpt.pt").exists()


def test_delayed_labels_reach_the_processor_and_their_offsets_are_committed() -> None:
    labels = [Record(LABELS, 0, i, -1, None, encode_event(Label(event_id=f"e{i}", label=1, ts=T0 + 100))) for i in range(3)]
    processor = AmountProcessor()
    source = FakeSource(tx_records(6, partitions=1) + labels)
    stats = make_runner(source, MemorySink(), processor=processor).run()

    assert [(lb.event_id, lb.label) for lb in processor.labels] == [("e0", 1), ("e1", 1), ("e2", 1)]
    assert stats.labels == 3
    assert source.committed[(LABELS, 0)] == 3


def test_checkpoint_holds_state_and_offsets_and_a_restart_seeks_to_them(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ckpt.pt"
    records = tx_records(30, partitions=2)
    first = FakeSource(records)
    make_runner(first, MemorySink(), checkpoint_path=path, max_events=14).run()
    assert path.exists()

    from stream_models import checkpoint

    saved = checkpoint.load(path)
    assert saved["offsets"] == first.committed == {(TOPIC, 0): 7, (TOPIC, 1): 7}
    assert saved["domains"]["transactions"] == {"seen": 14}

    processor = AmountProcessor()
    second = FakeSource(records)
    runner = make_runner(second, MemorySink(), processor=processor, checkpoint_path=path)
    runner.restore()
    assert processor.seen == 14
    assert second.seeks == [{(TOPIC, 0): 7, (TOPIC, 1): 7}]


def test_sigterm_finishes_the_batch_flushes_and_commits(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    source, sink = FakeSource(tx_records(50, partitions=1)), MemorySink()
    processor = AmountProcessor(on_process=lambda: os.kill(os.getpid(), signal.SIGTERM))
    runner = make_runner(source, sink, processor=processor, max_records=10, checkpoint_path=tmp_path / "c.pt")
    try:
        runner.install_signal_handlers()
        stats = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert stats.records == 10
    assert source.committed == {(TOPIC, 0): 10}
    assert [a.event_id for a in sink.alerts] == ["e0", "e5"]
    assert (tmp_path / "c.pt").exists()


def test_a_non_retriable_sink_error_stops_the_worker_without_committing() -> None:
    class BrokenSink(MemorySink):
        def flush(self) -> int:
            raise ValueError("bad alert")

    source = FakeSource(tx_records(10, partitions=1))
    with pytest.raises(ValueError):
        make_runner(source, BrokenSink()).run()
    assert source.committed == {}


def test_a_failed_commit_is_retried_with_the_next_one_and_does_not_stop_the_worker() -> None:
    from ingest.errors import IngestError

    class FlakyCommits(FakeSource):
        failures = 1

        def commit(self, offsets: dict[tuple[str, int], int]) -> None:
            if self.failures:
                self.failures -= 1
                raise IngestError("coordinator moved", retriable=True)
            super().commit(offsets)

    source = FlakyCommits(tx_records(20, partitions=1))
    stats = make_runner(source, MemorySink(), max_records=5).run()
    assert source.committed == {(TOPIC, 0): 20}
    assert stats.events == 20


def test_a_poll_refused_while_the_broker_restarts_is_retried_and_a_non_retriable_one_stops_the_worker() -> None:
    from ingest.errors import BrokerUnavailable, IngestError

    class RestartingBroker(FakeSource):
        failures = 3

        def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
            if self.pos and self.failures:
                self.failures -= 1
                raise BrokerUnavailable("poll failed: KafkaConnectionError: 111 ECONNREFUSED")
            return super().poll(max_records, timeout_ms)

    source = RestartingBroker(tx_records(20, partitions=1))
    stats = make_runner(source, MemorySink(), max_records=5).run()
    assert source.committed == {(TOPIC, 0): 20} and stats.events == 20 and source.failures == 0

    class BrokenAuth(FakeSource):
        def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
            raise IngestError("SASL authentication failed")

    with pytest.raises(IngestError, match="SASL authentication failed"):
        make_runner(BrokenAuth(tx_records(5)), MemorySink()).run()


def test_alerts_reach_the_sink_after_their_batch_and_a_failed_early_flush_is_retried_by_the_commit() -> None:
    log: list[tuple[str, Any]] = []
    source, sink = FakeSource(tx_records(30, partitions=1), log), FlakySink(failures=1, log=log)
    runner = make_runner(source, sink, max_records=10, commit_interval_s=3600.0, flush_alerts_every_batch=True)
    assert runner.step() == 10 and sink.pending == 2 and not sink.alerts  # Redis down: kept for later
    assert runner.step() == 10 and sink.pending == 0 and len(sink.alerts) == 4  # flushed with no commit
    assert source.committed == {}
    runner.run()
    assert [a.event_id for a in sink.alerts] == [f"e{i}" for i in range(0, 30, 5)]
    assert source.committed == {(TOPIC, 0): 30}


def test_a_process_frozen_inside_a_poll_is_not_idle() -> None:
    """SIGSTOP during a poll: the poll returns nothing long after it began; the worker must not take the
    frozen time for idle time and stop before the rebalance it missed (and the rest of the data) arrive."""
    now = [0.0]

    class FrozenOnce(FakeSource):
        frozen = False

        def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
            if self.pos == 10 and not self.frozen:
                self.frozen = True
                now[0] += 30.0  # thawed 30 s later, with nothing polled
                return []
            now[0] += timeout_ms / 1000.0 if self.pos >= len(self.records) else 0.01
            return super().poll(max_records, timeout_ms)

        @property
        def exhausted(self) -> bool:  # a live consumer never is
            return False

    source = FrozenOnce(tx_records(20, partitions=1))
    runner = Runner(source, MemorySink(), ListDLQ(), {TOPIC: AmountProcessor()}, labels_topic=LABELS,
                    config=RunnerConfig(max_records=10, poll_timeout_ms=500, commit_interval_s=0.0,
                                        checkpoint_interval_s=0.0, idle_timeout_s=6.0),
                    sleep=lambda s: None, clock=lambda: now[0])
    stats = runner.run()
    assert source.frozen and stats.records == 20 and source.committed == {(TOPIC, 0): 20}
    assert now[0] >= 30.0 + 6.0  # then stopped after 6 s of real idle polling


def test_structured_logs_are_one_json_object_per_line_with_their_fields() -> None:
    import io
    import json
    import logging

    from pipeline.observability import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pipeline.runner")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        source, sink = FakeSource(tx_records(10, partitions=1)), FlakySink(failures=5)
        make_runner(source, sink).run()
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    # five failed flushes, one outage: one line when it starts, one when it ends
    failing = [line for line in lines if line["msg"].startswith("alert delivery failing")]
    recovered = [line for line in lines if line["msg"].startswith("alert delivery recovered")]
    assert len(failing) == 1 and failing[0]["level"] == "WARNING" and failing[0]["error"] == "redis down"
    assert len(recovered) == 1 and "outage_s" in recovered[0]


def test_a_worker_paused_by_a_redis_outage_still_honours_its_idle_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    source, sink = FakeSource(tx_records(10, partitions=1)), FlakySink(failures=-1)
    runner = Runner(source, sink, ListDLQ(), {TOPIC: AmountProcessor()}, labels_topic=LABELS,
                    config=RunnerConfig(max_records=7, poll_timeout_ms=0, commit_interval_s=0.0,
                                        checkpoint_interval_s=0.0, idle_timeout_s=20.0),
                    sleep=sleep, clock=lambda: now[0])
    stats = runner.run()
    assert 20.0 <= now[0] < 30.0  # gave up after the idle timeout, not after forever
    assert stats.records == 7 and source.committed == {}  # nothing committed past undelivered alerts


def test_sigterm_stops_a_worker_paused_by_a_redis_outage_without_waiting_out_its_backoff() -> None:
    import threading
    import time

    source, sink = FakeSource(tx_records(10, partitions=1)), FlakySink(failures=-1)
    runner = Runner(source, sink, ListDLQ(), {TOPIC: AmountProcessor()}, labels_topic=LABELS,
                    config=RunnerConfig(max_records=7, poll_timeout_ms=0, commit_interval_s=0.0,
                                        checkpoint_interval_s=0.0, backoff_initial_s=60.0, backoff_max_s=60.0))
    threading.Timer(0.5, runner.request_stop).start()
    started = time.monotonic()
    runner.run()
    assert time.monotonic() - started < 30.0  # the 60 s backoff wait was cut short by the stop request
    assert source.committed == {}


def test_a_checkpoint_that_does_not_fit_the_models_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    from pipeline.errors import CheckpointMismatch
    from stream_models import checkpoint

    path = tmp_path / "c.pt"
    checkpoint.save(path, {"format": 1, "offsets": {}, "domains": {"transactions": {"other": 1}}, "models": {}, "meta": {}})
    runner = make_runner(FakeSource(tx_records(5)), MemorySink(), checkpoint_path=path)
    with pytest.raises(CheckpointMismatch, match="does not fit the configured transactions models"):
        runner.restore()


def test_idle_time_only_counts_once_partitions_are_assigned() -> None:
    class LateAssignment(FakeSource):
        """No partitions for the first polls, as while a group waits out a dead member's session."""

        waits = 3

        def assignment(self) -> set[tuple[str, int]]:
            return set() if self.waits else super().assignment()

        def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
            if self.waits:
                self.waits -= 1
                if self.waits:
                    return []
            return super().poll(max_records, timeout_ms)  # assigned during this poll, records come with it

        @property
        def exhausted(self) -> bool:  # a live consumer never is
            return False

    source = LateAssignment(tx_records(12, partitions=1))
    stats = make_runner(source, MemorySink(), idle_timeout_s=0.0).run()
    assert stats.records == 12
    assert source.committed == {(TOPIC, 0): 12}


def test_a_domain_that_cannot_alert_yet_says_so_in_logs_metrics_and_stats(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.domains import build_processor
    from tests.unit.test_runner_domains import small_settings

    processor = build_processor(small_settings(), "transactions")  # warm-up: the first 64 events
    for events, warming, message in ((30, True, "warming up: no alerts until the threshold is armed"),
                                     (400, False, "alerts armed")):
        runner = make_runner(FakeSource(tx_records(events, partitions=1)), MemorySink(), processor=processor)
        with caplog.at_level("INFO", logger="pipeline.runner"):
            runner.run()
        assert runner.stats.warming_up == {"transactions": warming}
        assert runner.metrics.warming_up.labels(domain="transactions")._value.get() == int(warming)
        assert message in caplog.text


def test_dead_letters_the_broker_refused_for_good_are_exported_and_never_hold_commits() -> None:
    class RefusingDLQ(ListDLQ):
        undeliverable = 0

        def flush(self) -> int:
            self.undeliverable += len(self.pending)  # e.g. the DLQ topic refuses the record for good
            self.pending = []
            return 0

    source = FakeSource(tx_records(20, partitions=1, bad=(3, 17)))
    runner = make_runner(source, MemorySink(), RefusingDLQ())
    runner.run()
    assert source.committed == {(TOPIC, 0): 20}
    assert runner.metrics.dead_letters_dropped._value.get() == 2


def test_periodic_checkpoints_are_written_in_the_background_and_the_last_one_waits(tmp_path: Path) -> None:
    """A checkpoint due while running is written by the writer thread; the one at shutdown is on disk when run()
    returns, with the final offsets."""
    path = tmp_path / "ckpt.pt"
    source = FakeSource(tx_records(40, partitions=1))
    runner = make_runner(source, MemorySink(), checkpoint_path=path, checkpoint_interval_s=1e-9, max_records=10)
    stats = runner.run()
    from stream_models import checkpoint

    assert stats.checkpoints >= 4 and runner._writer is not None
    assert checkpoint.load(path)["offsets"] == source.committed == {(TOPIC, 0): 40}
