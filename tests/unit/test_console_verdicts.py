"""VerdictStore with a fake Redis and producer: one label per alert, a failed produce frees the claim."""

from __future__ import annotations

import msgspec
import pytest

from ingest.errors import ProduceFailed
from ingest.schemas import Label
from pipeline.console.verdicts import VerdictStore
from pipeline.observability import ConsoleMetrics
from sinks.alert import Alert

ALERT = Alert("a1", "tx-9", "card-1", "transactions", 9.0, 3.5, "v1", 10.0, 11.0)


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str, nx: bool = False) -> bool | None:
        if nx and key in self.data:
            return None
        self.data[key] = value.encode()
        return True

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]

    def delete(self, key: str) -> int:
        return int(self.data.pop(key, None) is not None)


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.error: Exception | None = None

    def send(self, topic: str, key: bytes | None, value: bytes) -> Future:
        if self.error is None:
            self.sent.append((topic, key, value))
        return Future(self.error)


def store() -> tuple[VerdictStore, FakeRedis, FakeProducer, ConsoleMetrics]:
    redis, producer, metrics = FakeRedis(), FakeProducer(), ConsoleMetrics()
    return VerdictStore(redis, "sw:", producer, "labels", metrics=metrics), redis, producer, metrics  # type: ignore[arg-type]


def test_the_first_verdict_produces_one_label_and_later_ones_nothing() -> None:
    verdicts, redis, producer, metrics = store()
    first = verdicts.record(ALERT, 1)
    second = verdicts.record(ALERT, 0, by="cli")
    assert first.recorded and not second.recorded and second.verdict.label == 1 and second.verdict.by == "console"
    ((topic, key, value),) = producer.sent
    label = msgspec.json.decode(value, type=Label)
    assert (topic, key, label.event_id, label.label) == ("labels", b"tx-9", "tx-9", 1)
    assert list(redis.data) == ["sw:verdict:a1"] and verdicts.get("a1").name == "fraud"  # type: ignore[union-attr]
    assert metrics.registry.get_sample_value("streamwarden_verdicts_total",
                                             {"domain": "transactions", "verdict": "fraud"}) == 1.0


def test_a_label_kafka_does_not_take_frees_the_verdict_for_another_try() -> None:
    verdicts, redis, producer, metrics = store()
    producer.error = TimeoutError("no broker")
    with pytest.raises(ProduceFailed, match="tx-9"):
        verdicts.record(ALERT, 1)
    assert not redis.data and verdicts.get("a1") is None
    producer.error = None
    assert verdicts.record(ALERT, 0).recorded and len(producer.sent) == 1


@pytest.mark.parametrize("alert", [Alert("a2", "r1:close", "pump", "sensors", 1.0, 1.0, "v1", 1.0, 1.0, episode="close"),
                                   Alert("a3", "over-budget:transactions:60", "*", "transactions", 1.0, 1.0, "v1", 1.0, 1.0)])
def test_summaries_and_episode_ends_take_no_verdict(alert: Alert) -> None:
    verdicts, redis, producer, _ = store()
    with pytest.raises(ValueError, match="no single event"):
        verdicts.record(alert, 1)
    assert not redis.data and not producer.sent


def test_get_many_reads_all_in_one_call() -> None:
    verdicts, *_ = store()
    verdicts.record(ALERT, 0)
    assert {k: v.name for k, v in verdicts.get_many(["a1", "zz"]).items()} == {"a1": "genuine"}
    assert verdicts.get_many([]) == {}
