"""Decode + validate cost per event, next to the Kafka client's own cost per consumed message.

    .venv/bin/python bench/bench_decode.py                      # decode only
    .venv/bin/python bench/bench_decode.py --bootstrap 127.0.0.1:9092   # + kafka-python consume
    (or set STREAMWARDEN_KAFKA). Prints a table; --json PATH also writes the numbers.

Rows: `decode_batch` on 5,000 valid transactions / sensor readings (best of --repeats), the
same with 10% malformed records (slow path), the raw msgspec typed decode alone, json.loads
for comparison, the simulator's generation speed, and, with a broker, kafka-python's
KafkaConsumer.poll cost per message and BatchConsumer.poll (the same plus Record flattening).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from ingest.decode import BatchDecoder  # noqa: E402
from ingest.records import Record  # noqa: E402
from ingest.schemas import SCHEMAS, encode_event  # noqa: E402
from ingest.simulator import SensorSimulator, TransactionSimulator  # noqa: E402

BATCH = 5000


def best_us_per_item(fn: Callable[[], object], items: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


def records_of(domain: str, events: list) -> list[Record]:
    return [Record(domain, 0, i, 0, None, encode_event(e)) for i, e in enumerate(events)]


def with_malformed(records: list[Record], every: int = 10) -> list[Record]:
    bad = [b"", b"\xff\xfe", b"not json", b"[1,2]", b'{"v":2}', b'{"v":1,"event_id":"x"}']
    return [
        Record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, bad[(i // every) % len(bad)])
        if i % every == 0
        else r
        for i, r in enumerate(records)
    ]


def decode_rows(repeats: int) -> list[tuple[str, float, str]]:
    rows = []
    started = time.perf_counter()
    tx_sim = TransactionSimulator(seed=0, n_customers=1700, n_terminals=2000, days=30)
    tx_events = list(tx_sim.events())
    gen_s = time.perf_counter() - started
    rows.append(
        (
            "simulator: TransactionSimulator events()",
            gen_s / len(tx_events) * 1e6,
            f"{len(tx_events)} events in {gen_s:.2f} s",
        )
    )
    sensor_events = list(SensorSimulator(seed=0, n_devices=5, channels=8, n_steps=BATCH // 5).events())

    for domain, events in (("transactions", tx_events[:BATCH]), ("sensors", sensor_events[:BATCH])):
        rows += domain_rows(domain, events, repeats)
    return rows


def domain_rows(domain: str, events: list, repeats: int) -> list[tuple[str, float, str]]:
    records = records_of(domain, events)
    decoder = BatchDecoder(domain, min_ts=0.0, max_future_s=1e10)  # simulated times may be in the future
    result = decoder.decode(records)
    assert len(result.events) == BATCH, result.rejects[:3]
    mixed = with_malformed(records)
    n_bad = len(decoder.decode(mixed).rejects)
    raw = msgspec.json.Decoder(SCHEMAS[domain]).decode
    values = [r.value for r in records]
    return [
        (
            f"decode_batch {domain} (valid)",
            best_us_per_item(lambda: decoder.decode(records), BATCH, repeats),
            "",
        ),
        (
            f"decode_batch {domain} (10% malformed)",
            best_us_per_item(lambda: decoder.decode(mixed), BATCH, repeats),
            f"{n_bad} rejects with reasons",
        ),
        (
            f"  msgspec typed decode only, {domain}",
            best_us_per_item(lambda: [raw(v) for v in values], BATCH, repeats),
            "lower bound",
        ),
        (
            f"  json.loads only, {domain}",
            best_us_per_item(lambda: [json.loads(v) for v in values], BATCH, repeats),
            "no validation",
        ),
    ]


def kafka_rows(bootstrap: str, messages: int) -> list[tuple[str, float, str]]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from ingest.consumer import BatchConsumer, create_topics
    from ingest.producer import EventProducer

    topic = f"bench-decode-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 3})
    events = list(
        TransactionSimulator(seed=1, n_customers=max(50, messages // 60), n_terminals=500, days=30).events()
    )
    events = (events * (messages // max(1, len(events)) + 1))[:messages]
    with EventProducer(bootstrap, linger_ms=20) as producer:
        for e in events:
            producer.send(topic, e.card_id.encode(), encode_event(e))
        producer.flush()
    rows = []

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    consumer.poll(timeout_ms=1000, max_records=1)  # connect and fetch metadata outside the timing
    consumer.seek_to_beginning(*tps)
    got, started = 0, time.perf_counter()
    while got < messages:
        got += sum(len(v) for v in consumer.poll(timeout_ms=1000, max_records=5000).values())
    elapsed = time.perf_counter() - started
    consumer.close()
    rows.append(
        ("kafka-python KafkaConsumer.poll", elapsed / messages * 1e6, f"{messages} msgs from a local broker")
    )

    group = f"bench-{uuid.uuid4().hex[:8]}"
    batch = BatchConsumer(bootstrap, topic, group)
    warm = batch.poll(1, 5000)  # join the group outside the timing
    got, started = len(warm), time.perf_counter()
    while got < messages:
        got += len(batch.poll(5000, 1000))
    elapsed = time.perf_counter() - started
    batch.close()
    rows.append(("BatchConsumer.poll (kafka-python + Records)", elapsed / messages * 1e6, "group member"))
    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics([topic])
        admin.close()
    except Exception:  # best effort: a leftover bench topic is harmless
        pass
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("STREAMWARDEN_KAFKA"))
    parser.add_argument("--messages", type=int, default=50_000, help="messages consumed from Kafka")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows = decode_rows(args.repeats)
    if args.bootstrap:
        rows += kafka_rows(args.bootstrap, args.messages)
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'µs/event':>9}  note")
    print("-" * (width + 30))
    for name, us, note in rows:
        print(f"{name:<{width}}  {us:>9.2f}  {note}")
    decode_us = next(us for name, us, _ in rows if name == "decode_batch transactions (valid)")
    kafka_us = next((us for name, us, _ in rows if name.startswith("kafka-python")), None)
    if kafka_us is not None:
        print(f"\ndecode + validate costs {decode_us / kafka_us:.0%} of kafka-python's own per-message cost")
    else:
        print("\n(no broker: pass --bootstrap or set STREAMWARDEN_KAFKA for the Kafka rows)")
    if args.json:
        args.json.write_text(
            json.dumps([{"what": n, "us_per_event": u, "note": t} for n, u, t in rows], indent=2)
        )


if __name__ == "__main__":
    main()
