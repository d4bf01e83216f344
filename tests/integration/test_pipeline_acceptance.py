"""Acceptance tests of the whole pipeline on a real Kafka broker and a real Redis server.

1. end to end: simulated transactions and sensor readings produced to Kafka come out as alerts in
   Redis (injected frauds/faults among them) and the group's committed offsets reach the end offsets;
2. parity: a backtest over the same topic gives the live run's scores and alerts;
3. SIGTERM mid-stream and restart (worker as a subprocess): no event skipped, no alert duplicated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.produce import produce_events
from ingest.producer import EventProducer
from ingest.simulator import SensorSimulator, TransactionSimulator
from pipeline.settings import Settings, load_settings
from sinks.alert import Alert
from tests.small_models import SMALL_PARAMS

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

SMALL_MODEL = {"warmup_events": 64, "threshold_warmup": 64, "threshold_quantile": 0.97, "learn_every": 32,
               "params": SMALL_PARAMS, "auto_promote": False, "threshold_window": 400, "batch_size": 32, "steps_per_update": 1}


def sections(kafka_bootstrap: str, redis_url: str, prefix: str, topics: dict[str, str], group: str, state_dir: Path,
             domain: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": group, "session_timeout_ms": 10_000},
        "redis": {"url": redis_url, "prefix": prefix},
        "topics": topics,
        "runner": {"domain": domain, "state_dir": str(state_dir), "max_records": 200, "poll_timeout_ms": 200,
                   "commit_interval_s": 0.0, "checkpoint_interval_s": 0.0, "device": "cpu"},
        "transactions": dict(SMALL_MODEL),
        "sensors": {**SMALL_MODEL, "detector": "window_autoencoder", "window": 8, "quiet_rows": 5, "alarm_m": 1,
                    "alarm_n": 1, "label_delay_s": 60.0},
        "observability": {"log_format": "json", "log_level": "WARNING"},
    }


def as_env(data: dict[str, Any], prefix: str = "STREAMWARDEN_") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(as_env(value, f"{prefix}{key.upper()}__"))
        else:
            out[f"{prefix}{key.upper()}"] = str(value)
    return out


def produce(kafka_bootstrap: str, topic: str, domain: str, events: list[Any]) -> None:
    with EventProducer(kafka_bootstrap) as producer:
        report = produce_events(events, producer, topic, domain, progress=False)
    assert report.sent == len(events) and report.failed == 0


def alerts_in_redis(redis_client: Any, prefix: str) -> list[Alert]:
    return [Alert.from_json(fields[b"alert"]) for _, fields in redis_client.xrange(f"{prefix}alerts")]


def committed_offsets(kafka_bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-offsets")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        admin.close()


def end_offsets(kafka_bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items() if off > 0}
    finally:
        consumer.close()


def run_in_process(settings: Settings, idle_timeout_s: float = 4.0) -> Any:
    from pipeline.worker import build_live_runner

    runner, close = build_live_runner(settings, idle_timeout_s=idle_timeout_s)
    try:
        return runner.run()
    finally:
        close()


def test_simulated_events_become_alerts_in_redis_and_offsets_reach_the_end(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path,
) -> None:
    topics = {"transactions": topic_factory("tx", partitions=2), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    tx_sim = TransactionSimulator(seed=3, n_customers=60, n_terminals=60, days=6, amount_spikes_per_day=6.0)
    sensor_sim = SensorSimulator(seed=3, n_devices=2, n_steps=400, channels=3, spikes_per_1000=12.0,
                                 level_shifts_per_1000=4.0)
    produce(kafka_bootstrap, topics["transactions"], "transactions", list(tx_sim.events()))
    produce(kafka_bootstrap, topics["sensors"], "sensors", list(sensor_sim.events()))
    produce(kafka_bootstrap, topics["labels"], "labels", tx_sim.labels())
    settings = load_settings(**sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "all"))

    stats = run_in_process(settings)

    alerts = alerts_in_redis(redis_client, redis_prefix)
    assert stats.events == len(tx_sim) + len(sensor_sim)
    assert len(alerts) == stats.alerts > 0
    assert {a.domain for a in alerts} == {"transactions", "sensors"}
    frauds = set(tx_sim.to_frame()["event_id"][tx_sim.is_fraud])
    faults = set(sensor_sim.to_frame()["event_id"][sensor_sim.is_anomaly])
    assert {a.event_id for a in alerts} & (frauds | faults), "no injected fraud or fault was alerted"
    assert all((a.top_features or a.reason) and a.threshold <= a.score for a in alerts)
    assert committed_offsets(kafka_bootstrap, unique_name) == end_offsets(kafka_bootstrap, list(topics.values()))


def test_backtest_and_live_run_give_the_same_scores_and_alerts(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path,
) -> None:
    from pipeline.backtest import run_backtest

    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    tx_sim = TransactionSimulator(seed=5, n_customers=50, n_terminals=50, days=5, amount_spikes_per_day=6.0)
    produce(kafka_bootstrap, topics["transactions"], "transactions", list(tx_sim.events()))
    settings = load_settings(
        **sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "transactions"))

    run_in_process(settings)
    live = {a.alert_id: a for a in alerts_in_redis(redis_client, redis_prefix)}
    replay = run_backtest(settings, f"kafka://{topics['transactions']}?from=0", domain="transactions",
                          max_records=137)  # other batch sizes than the live run's

    assert live, "the live run raised no alert"
    assert replay.stats.events == len(tx_sim)
    assert {a.alert_id for a in replay.alerts} == set(live)
    for alert in replay.alerts:
        assert alert.score == live[alert.alert_id].score
        assert alert.threshold == live[alert.alert_id].threshold
    flagged = replay.scores[replay.scores["alert"]]
    assert set(flagged["event_id"]) == {a.event_id for a in live.values()}


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_sigterm_mid_stream_then_restart_skips_no_event_and_duplicates_no_alert(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path, client: str,
) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    from pipeline.backtest import run_backtest

    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    tx_sim = TransactionSimulator(seed=7, n_customers=80, n_terminals=80, days=8, amount_spikes_per_day=6.0)
    produce(kafka_bootstrap, topics["transactions"], "transactions", list(tx_sim.events()))
    config = sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "transactions")
    config["kafka"]["client"] = client
    config["runner"]["max_records"] = 50
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}, **as_env(config)}
    tp = (topics["transactions"], 0)
    command = [sys.executable, "-m", "pipeline.cli", "run"]

    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while committed_offsets(kafka_bootstrap, unique_name).get(tp, 0) < 200:
        assert worker.poll() is None, worker.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0, output[-3000:]
    stopped_at = committed_offsets(kafka_bootstrap, unique_name)[tp]
    assert 200 <= stopped_at < len(tx_sim), "the stop did not happen mid-stream"
    assert list(tmp_path.glob("*.ckpt")), "no checkpoint at shutdown"

    restarted = subprocess.run([*command, "--idle-timeout", "4"], env=env, capture_output=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr.decode()[-3000:]

    assert committed_offsets(kafka_bootstrap, unique_name)[tp] == len(tx_sim)
    alerts = alerts_in_redis(redis_client, redis_prefix)
    assert len({a.alert_id for a in alerts}) == len(alerts), "an alert was written twice"
    reference = run_backtest(load_settings(**config), f"kafka://{topics['transactions']}", domain="transactions")
    assert sorted(a.event_id for a in alerts) == sorted(a.event_id for a in reference.alerts)
    assert {a.alert_id: a.score for a in alerts} == {a.alert_id: a.score for a in reference.alerts}


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_killed_worker_restarts_from_its_checkpoint_and_replays_without_duplicates(
    kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str, topic_factory: Any, unique_name: str,
    tmp_path: Path, client: str,
) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    from pipeline.backtest import run_backtest
    from stream_models import checkpoint

    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    tx_sim = TransactionSimulator(seed=9, n_customers=80, n_terminals=80, days=8, amount_spikes_per_day=6.0)
    produce(kafka_bootstrap, topics["transactions"], "transactions", list(tx_sim.events()))
    config = sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "transactions")
    config["kafka"]["client"] = client
    config["runner"].update(max_records=50, checkpoint_interval_s=0.5)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}, **as_env(config)}
    tp = (topics["transactions"], 0)
    command = [sys.executable, "-m", "pipeline.cli", "run"]

    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while committed_offsets(kafka_bootstrap, unique_name).get(tp, 0) < 300 or not list(tmp_path.glob("*.ckpt")):
        assert worker.poll() is None, "the worker died on its own"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.2)
    worker.kill()  # SIGKILL: no flush, no commit, no final checkpoint
    worker.wait(timeout=30)
    killed_at = committed_offsets(kafka_bootstrap, unique_name)[tp]
    checkpointed = checkpoint.load(next(tmp_path.glob("*.ckpt")))["offsets"][tp]
    assert checkpointed <= killed_at < len(tx_sim)

    restarted = subprocess.run([*command, "--idle-timeout", "4"], env=env, capture_output=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr.decode()[-3000:]

    assert committed_offsets(kafka_bootstrap, unique_name)[tp] == len(tx_sim)
    alerts = alerts_in_redis(redis_client, redis_prefix)
    assert len({a.alert_id for a in alerts}) == len(alerts), "a replayed event duplicated its alert"
    reference = run_backtest(load_settings(**config), f"kafka://{topics['transactions']}", domain="transactions")
    assert {a.alert_id: a.score for a in alerts} == {a.alert_id: a.score for a in reference.alerts}


def test_a_message_too_big_for_a_dead_letter_of_its_own_does_not_stall_its_partition(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, topic_factory: Any, unique_name: str, tmp_path: Path,
) -> None:
    """A ~900 KB event is rejected as oversized; its dead letter (bounded, with size and digest) is delivered,
    and the events behind it are scored and committed in the same run."""
    import hashlib

    from ingest.dlq import decode_dead_letter
    from ingest.replay import KafkaRangeSource

    topics = {"transactions": topic_factory("tx", partitions=1), "sensors": topic_factory("sensors", partitions=1),
              "labels": topic_factory("labels", partitions=1)}
    events = list(TransactionSimulator(seed=4, n_customers=20, n_terminals=20, days=2).events())
    huge = b'{"v":1,"event_id":"huge","memo":"' + b"x" * 900_000 + b'"}'
    produce(kafka_bootstrap, topics["transactions"], "transactions", events[:100])
    with EventProducer(kafka_bootstrap) as producer:
        producer.send(topics["transactions"], b"card-huge", huge)
        producer.flush()
    produce(kafka_bootstrap, topics["transactions"], "transactions", events[100:])
    settings = load_settings(
        **sections(kafka_bootstrap, redis_url, redis_prefix, topics, unique_name, tmp_path, "transactions"))

    stats = run_in_process(settings)

    assert (stats.events, stats.rejects) == (len(events), 1)
    assert committed_offsets(kafka_bootstrap, unique_name)[(topics["transactions"], 0)] == len(events) + 1
    with KafkaRangeSource(kafka_bootstrap, topics["transactions"] + ".dlq") as dead:
        letters = []
        while not dead.exhausted:
            letters.extend(dead.poll(1000, 500))
    (letter,) = [decode_dead_letter(r.value) for r in letters]
    assert letter.reason == "oversized" and letter.offset == 100 and letter.value_size == len(huge)
    assert letter.value_sha256 == hashlib.sha256(huge).hexdigest() and huge.startswith(letter.value)
