"""ingest against a real Kafka broker: group consumption and commits, DLQ routing, rebalances, range replay."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from ingest.consumer import BatchConsumer, create_topics
from ingest.decode import BatchDecoder, RejectReason
from ingest.dlq import MAX_VALUE_BYTES, DeadLetterQueue, decode_dead_letter
from ingest.errors import ReplaySourceError
from ingest.produce import produce_events
from ingest.producer import EventProducer
from ingest.records import Record, next_offsets
from ingest.replay import KafkaRangeSource
from ingest.schemas import Transaction, encode_event

pytestmark = pytest.mark.kafka

NOW = time.time()


def transactions(n: int, prefix: str = "e", cards: int = 50) -> list[Transaction]:
    return [
        Transaction(
            f"{prefix}{i}", NOW - 3600 + i * 0.01, f"card-{i % cards}", f"term-{i % 7}", round(1 + i % 97, 2)
        )
        for i in range(n)
    ]


def poll_until(source: BatchConsumer, want: int, seen: list[Record], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while len(seen) < want and time.monotonic() < deadline:
        seen.extend(source.poll(500, 200))


def poll_quiet(source: BatchConsumer, rounds: int = 5) -> list[Record]:
    """What arrives over a few polls once the consumer has its partitions."""
    out: list[Record] = []
    deadline = time.monotonic() + 20
    while not source.assignment() and time.monotonic() < deadline:
        out.extend(source.poll(500, 200))
    for _ in range(rounds):
        out.extend(source.poll(500, 200))
    return out


def test_create_topics_is_idempotent(kafka_bootstrap: str, unique_name: str) -> None:
    name = f"{unique_name}-created"
    assert create_topics(kafka_bootstrap, {name: 2}) == [name]
    assert create_topics(kafka_bootstrap, {name: 2}) == []


@pytest.fixture(params=["kafka-python", "confluent"])
def consumer_class(request: pytest.FixtureRequest) -> type:
    """Each consumer test runs with the default client and with the optional fast one (`kafka.client`)."""
    if request.param == "kafka-python":
        return BatchConsumer
    pytest.importorskip("confluent_kafka")
    from ingest.confluent_consumer import ConfluentBatchConsumer

    return ConfluentBatchConsumer


def test_keyed_events_are_consumed_once_and_not_redelivered_after_restart(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: str, consumer_class: type
) -> None:
    topic = topic_factory("tx", partitions=3)
    events = transactions(3000)
    with EventProducer(kafka_bootstrap) as producer:
        report = produce_events(events, producer, topic, "transactions", progress=False)
    assert (report.sent, report.failed) == (3000, 0)

    group = f"{unique_name}-g"
    consumer = consumer_class(kafka_bootstrap, topic, group)
    records: list[Record] = []
    poll_until(consumer, 3000, records)
    assert {tp for tp in consumer.assignment()} == {(topic, 0), (topic, 1), (topic, 2)}
    decoded = BatchDecoder("transactions").decode(records)
    assert decoded.rejects == []
    assert Counter(e.event_id for e in decoded.events) == Counter(
        e.event_id for e in events
    )  # each exactly once
    # one card, one partition, in production order
    by_card: dict[str, set[int]] = {}
    for rec, ev in zip(decoded.records, decoded.events, strict=True):
        assert rec.key == ev.card_id.encode()
        by_card.setdefault(ev.card_id, set()).add(rec.partition)
    assert all(len(parts) == 1 for parts in by_card.values())
    card0 = [int(e.event_id[1:]) for e in decoded.events if e.card_id == "card-0"]
    assert card0 == sorted(card0)
    assert len({r.partition for r in records}) == 3

    consumer.commit(next_offsets(records))
    assert consumer.committed() == consumer.end_offsets()
    assert sum(consumer.end_offsets().values()) == 3000 and consumer.lag() == {
        tp: 0 for tp in consumer.assignment()
    }
    consumer.close()

    again = consumer_class(kafka_bootstrap, topic, group)
    try:
        assert poll_quiet(again) == []  # nothing redelivered
        assert again.positions() == again.end_offsets()
    finally:
        again.close()


def _malformed(i: int, reason: RejectReason) -> bytes | None:
    """A message that must be rejected for `reason`; unique per i (the key identifies it too)."""
    good = {
        "v": 1,
        "event_id": f"bad{i}",
        "ts": NOW - 60,
        "card_id": f"c{i}",
        "terminal_id": "t",
        "amount": 1.0,
    }
    R = RejectReason
    return {
        R.EMPTY: lambda: None if i % 2 else b"",
        R.OVERSIZED: lambda: json.dumps({**good, "pad": "x" * 70_000}).encode(),
        R.NOT_UTF8: lambda: b'{"event_id": "bad' + str(i).encode() + b'\xff\xfe"}',
        R.TOO_DEEP: lambda: json.dumps({**good, "deep": json.loads("[" * 50 + str(i) + "]" * 50)}).encode(),
        R.NOT_JSON: lambda: f"bad{i} {{not json".encode(),
        R.NOT_OBJECT: lambda: json.dumps([i, "bad"]).encode(),
        R.UNKNOWN_SCHEMA_VERSION: lambda: json.dumps({**good, "v": 2}).encode(),
        R.MISSING_FIELD: lambda: json.dumps({k: v for k, v in good.items() if k != "amount"}).encode(),
        R.WRONG_TYPE: lambda: json.dumps({**good, "amount": "12.50"}).encode(),
        R.NON_FINITE: lambda: json.dumps({**good, "amount": float("nan")}).encode(),
        R.OUT_OF_RANGE: lambda: json.dumps({**good, "amount": -float(i + 1)}).encode(),
    }[reason]()


@pytest.mark.slow
def test_every_valid_event_once_and_every_malformed_one_in_the_dlq_across_a_restart(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: str
) -> None:
    topic = topic_factory("events", partitions=3)
    dlq_topic = topic_factory("events.dlq", partitions=1)
    assert dlq_topic == topic + ".dlq"
    valid = transactions(10_000, cards=500)
    reasons = list(RejectReason)
    bad = [
        (f"bad-{i}".encode(), reasons[i % len(reasons)], _malformed(i, reasons[i % len(reasons)]))
        for i in range(2000)
    ]
    messages = [(e.card_id.encode(), encode_event(e)) for e in valid] + [(k, v) for k, _, v in bad]
    random.Random(7).shuffle(messages)
    with EventProducer(kafka_bootstrap) as producer:
        for key, value in messages:
            producer.send(topic, key, value)  # type: ignore[arg-type]
        producer.flush()
        assert (producer.sent, producer.failed) == (12_000, 0)

    group = f"{unique_name}-g"
    decoder = BatchDecoder("transactions")
    seen_events: list[str] = []
    seen_rejects: list[tuple[bytes | None, str]] = []

    def process(
        consumer: BatchConsumer, dlq: DeadLetterQueue, stop_after: int, deadline_s: float = 40
    ) -> int:
        processed = 0
        deadline = time.monotonic() + deadline_s
        while processed < stop_after and time.monotonic() < deadline:
            batch = consumer.poll(500, 200)
            if not batch:
                continue
            result = decoder.decode(batch)
            seen_events.extend(e.event_id for e in result.events)
            seen_rejects.extend((r.record.key, r.reason.value) for r in result.rejects)
            dlq.add(result.rejects)
            dlq.flush()  # the batch is durable: dead letters delivered...
            consumer.commit(next_offsets(batch))  # ...so its offsets may be committed
            processed += len(batch)
        return processed

    with EventProducer(kafka_bootstrap) as dlq_producer:
        dlq = DeadLetterQueue(dlq_producer)
        first = BatchConsumer(kafka_bootstrap, topic, group)
        done = process(first, dlq, stop_after=5000)
        first.close()
        assert 5000 <= done < 12_000  # stopped part way

        second = BatchConsumer(kafka_bootstrap, topic, group)
        done += process(second, dlq, stop_after=12_000 - done)
        assert done == 12_000
        assert poll_quiet(second, rounds=3) == []
        second.close()

    # every valid event exactly once
    assert Counter(seen_events) == Counter(e.event_id for e in valid)
    # every malformed one rejected exactly once, with its code
    expected = {key: reason.value for key, reason, _ in bad}
    assert Counter(k for k, _ in seen_rejects) == Counter(list(expected))
    assert dict(seen_rejects) == expected
    assert dlq.counts == dict(Counter(expected.values())) and len(dlq.counts) == len(RejectReason)

    # ...and in the DLQ topic, once each, with its code, original key, bytes and coordinates
    with KafkaRangeSource(kafka_bootstrap, dlq_topic) as dead:
        letters: list[Record] = []
        while not dead.exhausted:
            letters.extend(dead.poll(1000, 500))
    assert len(letters) == 2000
    originals = {key: value for key, _, value in bad}
    by_key = {}
    for rec in letters:
        letter = decode_dead_letter(rec.value)
        assert rec.key == letter.key and letter.key not in by_key
        by_key[letter.key] = letter
        assert letter.reason == expected[letter.key]
        original = originals[letter.key] or b""  # a dead letter keeps a bounded prefix, the size and the digest
        assert original.startswith(letter.value) and letter.value_size == len(original)
        assert letter.value == original or len(letter.value) == MAX_VALUE_BYTES
        assert letter.value_sha256 == hashlib.sha256(original).hexdigest()
        assert (
            letter.topic == topic and letter.partition in (0, 1, 2) and letter.offset >= 0 and letter.detail
        )
    assert set(by_key) == set(expected)


def test_revoke_callback_commits_so_a_joining_member_continues_without_duplicates(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: str, consumer_class: type
) -> None:
    topic = topic_factory("rebalance", partitions=3)
    with EventProducer(kafka_bootstrap) as producer:
        produce_events(transactions(4000, cards=60), producer, topic, "transactions", progress=False)
    group = f"{unique_name}-g"
    processed: dict[str, list[Record]] = {"a": [], "b": []}
    revoked: list[list[tuple[str, int]]] = []
    holder: dict[str, Any] = {}

    def on_revoke_a(partitions: list[tuple[str, int]]) -> None:
        revoked.append(list(partitions))
        done = next_offsets(processed["a"])
        holder["a"].commit({tp: off for tp, off in done.items() if tp in partitions})

    fast = {"heartbeat_interval_ms": 300}  # members notice the rebalance sooner
    holder["a"] = a = consumer_class(kafka_bootstrap, topic, group, on_revoke=on_revoke_a, config=fast)
    while len(processed["a"]) < 500:
        processed["a"].extend(a.poll(50, 200))
    b = consumer_class(
        kafka_bootstrap,
        topic,
        group,
        on_revoke=lambda parts: b.commit(next_offsets(processed["b"])),
        config=fast,
    )
    deadline = time.monotonic() + 40
    while len(processed["a"]) + len(processed["b"]) < 4000 and time.monotonic() < deadline:
        slow = not b.assignment()  # a works slowly until the rebalance, so records are left for b
        processed["a"].extend(a.poll(20 if slow else 500, 100 if slow else 20))
        got = b.poll(500, 100 if slow else 20)
        processed["b"].extend(got)
        if got:
            b.commit(next_offsets(got))
    try:
        assert revoked and set(revoked[0]) == {(topic, 0), (topic, 1), (topic, 2)}
        assert a.assignment() and b.assignment() and not a.assignment() & b.assignment()
        assert processed["b"], "the joining member got partitions and records"
        everything = [(r.partition, r.offset) for r in processed["a"] + processed["b"]]
        assert len(everything) == 4000 and len(set(everything)) == 4000  # nothing twice, nothing lost
    finally:
        a.close()
        b.close()


def test_pause_and_resume_hold_back_and_release_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: str, consumer_class: type
) -> None:
    topic = topic_factory("pause", partitions=1)
    consumer = consumer_class(kafka_bootstrap, topic, f"{unique_name}-g")
    with EventProducer(kafka_bootstrap) as producer:
        try:
            poll_quiet(consumer, rounds=1)
            consumer.pause(consumer.assignment())
            assert consumer.paused() == {(topic, 0)}
            produce_events(transactions(20), producer, topic, "transactions", progress=False)
            assert consumer.poll(100, 300) == []
            assert consumer.lag() == {(topic, 0): 20}
            consumer.resume([(topic, 0)])
            got: list[Record] = []
            poll_until(consumer, 20, got, deadline_s=10)
            assert [r.offset for r in got] == list(range(20))
        finally:
            consumer.close()


def _produce_timed(bootstrap: str, topic: str, base_ms: int, n: int) -> list[tuple[str, int]]:
    """n events with explicit timestamps base_ms + i seconds; returns (event_id, timestamp_ms)."""
    produced = []
    with EventProducer(bootstrap) as producer:
        for i, event in enumerate(transactions(n, prefix="r")):
            ts_ms = base_ms + i * 1000
            producer.send(topic, event.card_id.encode(), encode_event(event), timestamp_ms=ts_ms)
            produced.append((event.event_id, ts_ms))
        producer.flush()
    return produced


def _drain(source: KafkaRangeSource) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + 30
    while not source.exhausted and time.monotonic() < deadline:
        out.extend(source.poll(100, 200))
    assert source.exhausted and source.poll(100, 0) == []
    return out


def test_range_replay_by_timestamp_returns_exactly_the_events_in_the_range(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("history", partitions=3)
    base = 1_700_000_000_000
    produced = _produce_timed(kafka_bootstrap, topic, base, 300)
    start, end = base + 100_000, base + 200_000  # [start, end)
    with KafkaRangeSource(kafka_bootstrap, topic, start, end, by="timestamp") as source:
        records = _drain(source)
    want = sorted(eid for eid, ts in produced if start <= ts < end)
    got = BatchDecoder("transactions").decode(records).events
    assert len(want) == 100
    assert sorted(e.event_id for e in got) == want  # exactly those, each once
    assert all(start <= r.timestamp_ms < end for r in records)

    with KafkaRangeSource(kafka_bootstrap, topic, base + 250_500, None, by="timestamp") as tail:
        assert len(_drain(tail)) == 49  # from 251 s to the end
    with KafkaRangeSource(kafka_bootstrap, topic, base + 10_000_000, None, by="timestamp") as after:
        assert after.exhausted and after.poll(100, 0) == []


def test_range_replay_by_offset_and_it_never_commits(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: str
) -> None:
    topic = topic_factory("offsets", partitions=2)
    _produce_timed(kafka_bootstrap, topic, 1_700_000_000_000, 100)
    with KafkaRangeSource(kafka_bootstrap, topic) as everything:
        all_records = _drain(everything)
        ends = everything.end_offsets()
    assert len(all_records) == 100 and sum(ends.values()) == 100
    with KafkaRangeSource(kafka_bootstrap, topic, start=5, end={0: 10, 1: 8}, by="offset") as window:
        records = _drain(window)
        window.commit({(topic, 0): 10})  # a no-op
        assert window.bounds() == {(topic, 0): (5, 10), (topic, 1): (5, 8)}
    assert sorted((r.partition, r.offset) for r in records) == [(0, o) for o in range(5, 10)] + [
        (1, o) for o in range(5, 8)
    ]
    with KafkaRangeSource(kafka_bootstrap, topic, partitions=[1]) as one:
        assert {r.partition for r in _drain(one)} == {1}
    with pytest.raises(ReplaySourceError):
        KafkaRangeSource(kafka_bootstrap, f"{unique_name}-does-not-exist")
