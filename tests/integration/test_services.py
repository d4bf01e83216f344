"""The real services the project starts: Kafka and Redis round-trips, and `dev up/down` lifecycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.ports import free_ports


def _consume_all(bootstrap: str, topic: str, group: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
        consumer.commit()
    finally:
        consumer.close()
    return got


@pytest.mark.kafka
def test_keyed_events_round_trip_through_a_consumer_group_without_redelivery(kafka_bootstrap, topic_factory, unique_name):
    topic = topic_factory("roundtrip", partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = {}
    for i in range(300):
        key = f"card-{i % 17}"
        value = {"event_id": f"e{i}", "card_id": key, "amount": i * 1.5}
        producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
        sent[f"e{i}"] = key
    producer.flush()
    producer.close()

    group = f"{unique_name}-group"
    first = _consume_all(kafka_bootstrap, topic, group, expected=len(sent))
    received = {json.loads(r.value)["event_id"]: r for r in first}
    assert received.keys() == sent.keys()
    assert len(first) == len(sent)
    # one key always lands on one partition, so a card's events stay in order
    partitions_by_key: dict[bytes, set[int]] = {}
    for r in first:
        partitions_by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())
    assert len({r.partition for r in first}) == 3

    again = _consume_all(kafka_bootstrap, topic, group, expected=1, timeout_s=5)
    assert again == []


@pytest.mark.redis
def test_redis_stream_consumer_group_and_pubsub(redis_client, redis_prefix):
    stream = f"{redis_prefix}alerts"
    ids = [redis_client.xadd(stream, {"alert_id": f"a{i}"}) for i in range(5)]
    redis_client.xgroup_create(stream, "readers", id="0")
    entries = redis_client.xreadgroup("readers", "c1", {stream: ">"}, count=10)
    [(name, messages)] = entries
    assert [m[1][b"alert_id"] for m in messages] == [f"a{i}".encode() for i in range(5)]
    assert redis_client.xack(stream, "readers", *ids) == 5
    assert redis_client.xpending(stream, "readers")["pending"] == 0

    pubsub = redis_client.pubsub()
    channel = f"{redis_prefix}live"
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    received = []

    def listen() -> None:
        msg = pubsub.get_message(timeout=5, ignore_subscribe_messages=True)
        if msg:
            received.append(msg["data"])

    listener = threading.Thread(target=listen)
    listener.start()
    redis_client.publish(channel, b"hello")
    listener.join(timeout=10)
    pubsub.close()
    assert received == [b"hello"]


def _dev(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "dev", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_dev_up_twice_is_safe_and_dev_down_leaves_no_process(local_services):
    # its own ports, the same jar cache as the session's services
    kafka_port, redis_port, controller_port = free_ports(3)
    env = {
        **os.environ,
        "STREAMWARDEN_HOME": str(local_services.home),
        "STREAMWARDEN_KAFKA_PORT": str(kafka_port),
        "STREAMWARDEN_KAFKA_CONTROLLER_PORT": str(controller_port),
        "STREAMWARDEN_REDIS_PORT": str(redis_port),
    }
    first = _dev(["up"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        second = _dev(["up"], env)
        assert second.returncode == 0
        assert "kafka already running" in second.stdout
        assert "redis already running" in second.stdout
        status = _dev(["status"], env)
        assert status.returncode == 0
        assert f"127.0.0.1:{kafka_port}" in status.stdout
        pids = [
            int((local_services.home / "run" / f"kafka-{kafka_port}" / "kafka.pid").read_text()),
            int((local_services.home / "run" / f"redis-{redis_port}" / "redis.pid").read_text()),
        ]
    finally:
        down = _dev(["down"], env)
    assert down.returncode == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    for port in (kafka_port, redis_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    assert _dev(["status"], env).returncode == 1
