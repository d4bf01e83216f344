"""Helpers of the chaos tests: produce events, run/kill/restart workers, start and stop private
services, and read back what happened (scored-event logs, committed offsets, alerts, dead letters)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.ports import free_port, free_ports

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ waiting


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


# ------------------------------------------------------------------------------ events


def simulated_transactions(n: int, seed: int = 0) -> list[Any]:
    """The first `n` transactions (time order) of the simulator, with about n / 40 cards."""
    from ingest.simulator import TransactionSimulator

    customers = max(50, n // 40)
    days = max(2, -(-n // (2 * customers)) + 2)
    events = list(TransactionSimulator(seed=seed, n_customers=customers, n_terminals=customers, days=days).events())
    if len(events) < n:
        raise ValueError(f"simulator made {len(events)} events, fewer than {n}")
    return events[:n]


def produce(bootstrap: str, topic: str, items: Sequence[tuple[bytes | None, bytes]],
            partition: int | None = None) -> None:
    """Send (key, value) pairs in order and wait for every acknowledgement."""
    from ingest.producer import EventProducer

    with EventProducer(bootstrap, config={"batch_size": 256 * 1024, "linger_ms": 20,
                                          "max_request_size": 8 * 1024 * 1024}) as producer:
        for key, value in items:
            producer.send(topic, key, value, partition=partition)
        producer.flush()
        if producer.failed:
            raise AssertionError(f"{producer.failed} messages were not delivered: {producer.last_error}")


def encoded(events: Sequence[Any]) -> list[tuple[bytes | None, bytes]]:
    from ingest.schemas import encode_event

    return [(e.card_id.encode(), encode_event(e)) for e in events]


def produce_paced(bootstrap: str, topic: str, items: Sequence[tuple[bytes | None, bytes]], rate: float, *,
                  trickle_after: int | None = None, until: threading.Event | None = None) -> None:
    """Send at about `rate` messages per second (a stream that lasts), then wait for the acknowledgements. With
    `trickle_after` and `until`: from that many messages on, one message every 0.1 s until `until` is set, then
    `rate` again, so a test's late worker (a slow machine's start-up takes minutes beside busy workers) still
    finds a stream to join."""
    from ingest.producer import EventProducer

    chunk = max(1, int(rate / 10))
    started, sent = time.monotonic(), 0
    with EventProducer(bootstrap) as producer:
        while sent < len(items):
            trickle = trickle_after is not None and until is not None and sent >= trickle_after and not until.is_set()
            n = 1 if trickle else chunk
            for key, value in items[sent : sent + n]:
                producer.send(topic, key, value)
            producer.flush()
            sent += n
            if trickle:
                time.sleep(0.1)
                started = time.monotonic() - sent / rate  # the pace goes on from here once released
            else:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        if producer.failed:
            raise AssertionError(f"{producer.failed} messages were not delivered: {producer.last_error}")


def read_features(path: Path) -> dict[str, np.ndarray]:
    """event id -> the feature row of its last scoring, from a worker's features log."""
    out: dict[str, np.ndarray] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        try:
            out[parts[0]] = np.array([float(x) for x in parts[1:]])
        except ValueError:
            continue  # a line cut short by a kill -9
    return out


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from ingest.consumer import create_topics as create

    create(bootstrap, topics)


# ------------------------------------------------------------------------------ workers


@dataclass
class WorkerSpec:
    """Everything a worker subprocess needs: where Kafka/Redis are and which names this test owns."""

    bootstrap: str
    redis_url: str
    topic: str
    labels_topic: str
    group: str
    redis_prefix: str
    workdir: Path
    idle_timeout_s: float = 6.0
    commit_interval_s: float = 0.5
    checkpoint_interval_s: float = 5.0  # restore replays from the last checkpoint to the committed offsets
    partition_state: str | None = None  # state.store: a shared directory or redis:// URL (partition handover)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWARDEN_")}
        env.update({
            "PYTHONPATH": str(REPO),
            "STREAMWARDEN_KAFKA": self.bootstrap,
            "STREAMWARDEN_REDIS_URL": self.redis_url,
            "STREAMWARDEN_TOPICS__TRANSACTIONS": self.topic,
            "STREAMWARDEN_TOPICS__LABELS": self.labels_topic,
            "STREAMWARDEN_KAFKA__GROUP_ID": self.group,
            "STREAMWARDEN_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMWARDEN_REDIS__PREFIX": self.redis_prefix,
            "STREAMWARDEN_RUNNER__STATE_DIR": str(self.workdir / f"state-{name}"),
            "STREAMWARDEN_RUNNER__COMMIT_INTERVAL_S": str(self.commit_interval_s),
            "STREAMWARDEN_RUNNER__CHECKPOINT_INTERVAL_S": str(self.checkpoint_interval_s),
            "STREAMWARDEN_RUNNER__BACKOFF_MAX_S": "1.0",
            "SW_SCORED_LOG": str(self.scored_log(name)),
            "SW_FEATURES_LOG": str(self.workdir / f"{self.group}-{name}.features"),
            "SW_IDLE_TIMEOUT": str(self.idle_timeout_s),
            # These tests check delivery, not model quality: one detector learning often enough that the
            # shipped threshold raises alerts within their few thousand events (the defaults' supervised
            # challenger and 2,048-event chunks raise none on so short a label-free stream).
            "STREAMWARDEN_TRANSACTIONS__CHALLENGERS": "[]",
            "STREAMWARDEN_TRANSACTIONS__AUTO_PROMOTE": "false",
            "STREAMWARDEN_TRANSACTIONS__LEARN_EVERY": "512",
            "STREAMWARDEN_TRANSACTIONS__STEPS_PER_UPDATE": "2",
            "STREAMWARDEN_TRANSACTIONS__REPLAY_CAPACITY": "20000",
        })
        if self.partition_state:
            env["STREAMWARDEN_STATE__STORE"] = self.partition_state
        env.update(self.extra_env)
        return env

    def scored_log(self, name: str) -> Path:
        """The scored-event log of worker `name` (a restarted worker appends to its own)."""
        return self.workdir / f"{self.group}-{name}.scored"


class Worker:
    """One `streamwarden` worker process (tests.reliability.worker_main) with its own log file."""

    def __init__(self, spec: WorkerSpec, name: str = "w0") -> None:
        self.spec, self.name = spec, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = spec.workdir / f"{spec.group}-{name}.log"

    @property
    def scored_log(self) -> Path:
        return self.spec.scored_log(self.name)

    @property
    def features_log(self) -> Path:
        return self.spec.workdir / f"{self.spec.group}-{self.name}.features"

    def start(self) -> Worker:
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.worker_main"], cwd=REPO,
                                     env=self.spec.env(self.name), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (flush, commit, checkpoint) and wait; SIGKILL if it does not stop in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return int(self.proc.returncode)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return int(self.proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.name} still running after {timeout_s:.0f} s; log:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def workers(*items: Worker) -> Iterator[Sequence[Worker]]:
    """Stop every worker at the end, even when the test fails."""
    try:
        yield items
    finally:
        for w in items:
            if w.alive:
                w.kill9()


# ------------------------------------------------------------------------------ reading results


@dataclass(frozen=True)
class Scored:
    partition: int
    offset: int
    event_id: str
    score: float


def read_scored(path: Path) -> list[Scored]:
    """The worker's scored-event log; a line cut short by a kill -9 is dropped."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) != 4:
            continue
        try:
            out.append(Scored(int(parts[0]), int(parts[1]), parts[2], float(parts[3])))
        except ValueError:
            continue
    return out


def scored_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def last_scores(rows: Sequence[Scored]) -> dict[str, float]:
    """event id -> the score of its last scoring (a replay after a crash scores some events again)."""
    return {r.event_id: r.score for r in rows}


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()}
    finally:
        admin.close()


def end_offsets(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="tests-offsets")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {(tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message of `topic` (all partitions) up to its current end."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    ends = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="tests-reader", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        parts = [TopicPartition(t, p) for (t, p) in ends]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[(tp.topic, tp.partition)] for tp in parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            for messages in consumer.poll(timeout_ms=500, max_records=5000).values():
                out.extend(messages)
        return out
    finally:
        consumer.close()


def dead_letters(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in read_topic(bootstrap, f"{topic}.dlq")]


def alert_ids(redis_client: Any, stream: str) -> list[str]:
    """alert_id of every entry of the alert stream, duplicates kept."""
    return [fields[b"alert_id"].decode() for _entry_id, fields in redis_client.xrange(stream)]


def record_figures(test: str, **figures: Any) -> None:
    """Append this test's figures to $SW_RELIABILITY_RESULTS (JSON lines) when set; RELIABILITY.md quotes them."""
    print(f"[reliability] {test}: {json.dumps(figures, sort_keys=True)}")
    path = os.environ.get("SW_RELIABILITY_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures})
                    + "\n")


def duplicates(values: Sequence[str]) -> dict[str, int]:
    return {k: n for k, n in Counter(values).items() if n > 1}


def scores_equal(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = sorted(a)
    if keys != sorted(b):
        return False
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    return bool(np.array_equal(np.isnan(x), np.isnan(y)) and np.allclose(x[~np.isnan(x)], y[~np.isnan(y)],
                                                                           rtol=1e-9, atol=1e-12))


# ------------------------------------------------------------------------------ private services


@contextmanager
def private_kafka(tmp_home: Path) -> Iterator[Any]:
    """A Kafka broker of this test only (own ports, own data), stopped and removed at the end."""
    from pipeline.services import LocalServices

    base = LocalServices.from_env()
    port, controller = free_ports(2)
    services = dataclasses.replace(base, kafka_port=port, controller_port=controller, kafka_heap="512m")
    try:
        services.start_kafka()
        yield services
    finally:
        services._stop(services.kafka_run, "kafka", "kafka.Kafka")
        shutil.rmtree(services.kafka_run, ignore_errors=True)


def stop_kafka(services: Any) -> None:
    services._stop(services.kafka_run, "kafka", "kafka.Kafka")


class PrivateRedis:
    """A redis-server of this test only, durable (appendonly yes, appendfsync always), restartable."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed")
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
               "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
            except redis.exceptions.RedisError:
                return False

        wait_until(up, 30, "the private redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port)
