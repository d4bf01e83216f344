"""Redis goes away for 10 s in the middle of a stream of alerts; afterwards each alert is stored exactly once."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from rich.console import Console

from pipeline.services import debian_tool
from sinks.alert import Alert, make_alert_id
from sinks.connection import RedisConfig
from sinks.errors import SinkUnavailable
from sinks.redis_sink import RedisAlertSink
from sinks.retry import RetryPolicy
from sinks.tail import tail_alerts
from tests.ports import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class ThrowawayRedis:
    """A redis-server of our own, with an fsync-always AOF so acknowledged writes survive a restart."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port, self.data_dir = port, data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = debian_tool("redis-server", "redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
        args += ["--appendfsync", "always", "--dir", str(self.data_dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


def make_alert(n: int) -> Alert:
    event_id = f"evt-{n}"
    return Alert(
        make_alert_id(event_id, "ae", "v1"),
        event_id,
        f"card-{n % 17}",
        "transactions",
        1.0,
        0.5,
        "v1",
        float(n),
        time.time(),
    )


def test_ten_second_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = ThrowawayRedis(free_port(), tmp_path)
    server.start()
    connection = RedisConfig(url=server.url, socket_timeout_s=1.0, connect_timeout_s=0.3, retries=0)
    sink = RedisAlertSink(connection=connection, prefix="outage:", batch_size=50)
    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
    produced: list[Alert] = []
    unavailable = 0
    errors: list[BaseException] = []
    stop = threading.Event()

    def runner() -> None:  # what the pipeline does: add a batch, flush, keep going when Redis is away
        nonlocal unavailable
        try:
            n = 0
            while not stop.is_set():
                batch = [make_alert(n + i) for i in range(20)]
                n += 20
                produced.extend(batch)
                sink.add(batch + produced[-25:-20])  # plus a few redeliveries of the previous batch
                try:
                    sink.flush_with_retry(policy)
                except SinkUnavailable:
                    unavailable += 1
                time.sleep(0.05)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    thread = threading.Thread(target=runner)
    try:
        thread.start()
        while len(produced) < 400 and thread.is_alive():
            time.sleep(0.05)
        server.stop()
        written_before = sink.stats["written"]
        time.sleep(10)
        pending_during_outage = sink.pending
        server.start()
        time.sleep(2)
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive() and not errors
        sink.flush_with_retry(RetryPolicy(max_attempts=20, base_delay=0.1, max_delay=1.0))

        client = redis.Redis.from_url(server.url)
        stored = [fields[b"alert_id"].decode() for _, fields in client.xrange("outage:alerts")]
        client.close()
    finally:
        stop.set()
        thread.join(timeout=60)
        sink.close()
        server.stop()

    counts = Counter(stored)
    assert unavailable > 0 and pending_during_outage > 100  # the outage was real and alerts piled up
    assert written_before >= 300  # written before the outage and still there after the restart (AOF)
    assert max(counts.values()) == 1
    assert set(counts) == {a.alert_id for a in produced}
    # A batch whose reply was lost as the server went down was written; its retry counts it as duplicates.
    assert sink.pending == 0
    assert sink.stats["written"] <= len(produced) <= sink.stats["written"] + sink.stats["duplicates"]


def test_tail_follow_waits_out_an_outage_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    server = ThrowawayRedis(free_port(), tmp_path)
    server.start()
    connection = RedisConfig(url=server.url, socket_timeout_s=1.0, connect_timeout_s=0.3, retries=0)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    printed: list[int] = []

    def lines() -> list[str]:
        return console.file.getvalue().splitlines()  # type: ignore[attr-defined]

    tail = threading.Thread(
        target=lambda: printed.append(
            tail_alerts(
                since="0",
                follow=True,
                limit=6,
                as_json=True,
                console=console,
                prefix="tail:",
                connection=connection,
                block_ms=200,
                max_reconnect_delay_s=0.5,
            )
        )
    )
    try:
        with RedisAlertSink(connection=connection, prefix="tail:") as sink:
            sink.add(make_alert(n) for n in range(3))
            sink.flush()
            tail.start()
            deadline = time.monotonic() + 20
            while len(lines()) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            server.stop()
            time.sleep(2)
            server.start()
            sink.add(make_alert(n) for n in range(3, 6))
            sink.flush_with_retry(RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0))
            tail.join(timeout=30)
    finally:
        server.stop()
    assert not tail.is_alive() and printed == [6]
    assert [Alert.from_json(line).event_id for line in lines()] == [f"evt-{n}" for n in range(6)]
