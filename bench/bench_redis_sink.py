"""Benchmark of RedisAlertSink: flush throughput by batch size vs raw pipelined XADD, and pub/sub latency.

    python bench/bench_redis_sink.py                      # starts a throwaway redis-server on a free port
    python bench/bench_redis_sink.py --url redis://127.0.0.1:6379/0 --alerts 20000

Latency is measured per alert from the moment flush() is called until a pub/sub subscriber (another
thread, its own connection) has decoded it, and also from the moment flush() returned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from sinks.alert import Alert, make_alert_id
from sinks.redis_sink import RedisAlertSink
from sinks.subscriber import AlertSubscriber


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """Yield `url`, or start a throwaway redis-server (no persistence) and yield its URL."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH: install it or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def make_alerts(n: int, tag: str, domain: str = "transactions") -> list[Alert]:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 5.0, n)
    now = time.time()
    return [
        Alert(
            make_alert_id(f"{tag}-{i}", "ae", "v1"),
            f"{tag}-{i}",
            f"card-{i % 5000}",
            domain,
            float(scores[i]),
            0.5,
            "v1",
            now + i * 0.001,
            now,
            [("amount", 812.4), ("hour_of_day", 3.0), ("velocity_1h", 2.5)],
        )
        for i in range(n)
    ]


def cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=10_000))
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])


def bench_flush(url: str, batch: int, n: int, client: redis.Redis) -> tuple[float, float]:
    """(alerts/s written, alerts/s for replaying the same alerts as duplicates)."""
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    alerts = make_alerts(n, prefix)
    with RedisAlertSink(url, prefix=prefix, batch_size=batch) as sink:
        rates = []
        for _ in range(2):  # second pass: every alert is a duplicate
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                sink.add(alerts[i : i + batch])
                sink.flush()
            rates.append(n / (time.perf_counter() - t0))
        assert sink.stats["written"] == n and sink.stats["duplicates"] == n
    cleanup(client, prefix)
    return rates[0], rates[1]


def bench_raw_xadd(batch: int, n: int, client: redis.Redis) -> float:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    payloads = [a.to_json() for a in make_alerts(n, prefix)]
    stream = f"{prefix}alerts"
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for p in payloads[i : i + batch]:
            pipe.xadd(stream, {"alert": p}, maxlen=1_000_000, approximate=True)
        pipe.execute()
    rate = n / (time.perf_counter() - t0)
    cleanup(client, prefix)
    return rate


def bench_latency(
    url: str, rounds: int, per_flush: int, client: redis.Redis
) -> tuple[list[float], list[float]]:
    """Per-alert pub/sub latency in ms: (from flush() call, from flush() return)."""
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    received: dict[str, float] = {}
    stop = threading.Event()
    with AlertSubscriber(url, prefix=prefix) as sub, sub.subscribe("transactions") as live:

        def listen() -> None:
            while not stop.is_set():
                alert = live.get(timeout=0.1)
                if alert is not None:
                    received[alert.alert_id] = time.perf_counter()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        from_call: list[float] = []
        from_return: list[float] = []
        with RedisAlertSink(url, prefix=prefix) as sink:
            for r in range(rounds):
                alerts = make_alerts(per_flush, f"{prefix}{r}")
                sink.add(alerts)
                t0 = time.perf_counter()
                sink.flush()
                t1 = time.perf_counter()
                deadline = t1 + 2.0
                while any(a.alert_id not in received for a in alerts) and time.perf_counter() < deadline:
                    time.sleep(0.0002)
                for a in alerts:
                    if a.alert_id in received:
                        from_call.append((received[a.alert_id] - t0) * 1000)
                        from_return.append((received[a.alert_id] - t1) * 1000)
                time.sleep(0.005)
        stop.set()
        listener.join()
    lost = rounds * per_flush - len(from_call)
    if lost:
        print(f"WARNING: {lost} alerts not received within 2 s")
    cleanup(client, prefix)
    return from_call, from_return


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("STREAMWARDEN_REDIS_URL"))
    parser.add_argument("--sizes", default="100,500,1000,2000,5000")
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per batch size")
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds")
    parser.add_argument("--per-flush", default="1,100", help="alerts per flush in the latency runs")
    args = parser.parse_args()
    console = Console()
    sizes = [int(s) for s in args.sizes.split(",")]
    with redis_server(args.url) as url:
        client = redis.Redis.from_url(url)
        info = client.info("server")
        console.print(
            f"redis {info['redis_version']} at {url}; {args.alerts} alerts per size; cpus={os.cpu_count()}"
        )
        table = Table(title="RedisAlertSink.flush vs raw pipelined XADD (alerts/s)")
        for col in (
            "batch",
            "sink flush (new)",
            "sink flush (all duplicates)",
            "raw XADD pipeline",
            "sink / raw",
        ):
            table.add_column(col, justify="right")
        for size in sizes:
            new_rate, dup_rate = bench_flush(url, size, args.alerts, client)
            raw_rate = bench_raw_xadd(size, args.alerts, client)
            table.add_row(
                str(size),
                f"{new_rate:,.0f}",
                f"{dup_rate:,.0f}",
                f"{raw_rate:,.0f}",
                f"{new_rate / raw_rate:.2f}",
            )
        console.print(table)
        lat = Table(title=f"pub/sub latency after flush, ms ({args.rounds} flushes each)")
        for col in (
            "alerts per flush",
            "p50 from call",
            "p99 from call",
            "p50 after return",
            "p99 after return",
            "mean from call",
        ):
            lat.add_column(col, justify="right")
        for per_flush in (int(x) for x in args.per_flush.split(",")):
            from_call, from_return = bench_latency(url, args.rounds, per_flush, client)
            lat.add_row(
                str(per_flush),
                f"{pct(from_call, 50):.2f}",
                f"{pct(from_call, 99):.2f}",
                f"{pct(from_return, 50):.2f}",
                f"{pct(from_return, 99):.2f}",
                f"{statistics.fmean(from_call) if from_call else float('nan'):.2f}",
            )
        console.print(lat)
        client.close()


if __name__ == "__main__":
    main()
