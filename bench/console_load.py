"""`streamwarden console` under a steady alert load: page load time and time to show a new alert.

Steps:
  1. `streamwarden dev up` (local Kafka + Redis);
  2. `streamwarden console --port 0` (any free port; it prints its address) in its own process, with a fresh
     `redis.prefix` (so its stream is this run's);
  3. alerts written to that stream through the project's Redis sink (RedisAlertSink, as a worker writes them) at
     `--rate` alerts/s, in batches of a tenth of a second, for `--seconds`;
  4. meanwhile one live list (server-sent events, `GET /events`) records when each alert arrives, and a page
     reader loads `GET /` (the newest 200 alerts, rendered) every `--page-every` seconds.
New alert shown = arrival at the live-list client minus the alert's stream entry time (XADD). Targets: page load
< 300 ms, new alert shown < 1 s.

    .venv/bin/python -m bench.console_load --rate 100 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench.common import write_result
from bench.run_speed import ROOT, cli
from sinks.alert import new_alert
from sinks.redis_sink import RedisAlertSink, RedisSinkConfig


def summary(values: list[float]) -> dict[str, float | None]:
    data = np.array(values, dtype=float) * 1000
    if not len(data):
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(data), "p50_ms": round(float(np.percentile(data, 50)), 1),
            "p95_ms": round(float(np.percentile(data, 95)), 1), "p99_ms": round(float(np.percentile(data, 99)), 1),
            "max_ms": round(float(data.max()), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="alerts per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--page-every", type=float, default=0.5, help="seconds between two loads of GET /")
    ap.add_argument("--out", default=str(ROOT / "bench/results/console_load.json"))
    args = ap.parse_args(argv)
    import redis

    cli("dev", "up")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    prefix = f"bench-console-{stamp}:"
    redis_url = os.environ.get("STREAMWARDEN_REDIS_URL", "redis://127.0.0.1:6379/0")
    env = {**os.environ, "STREAMWARDEN_REDIS__PREFIX": prefix}
    command = ["console", "--port", "0"]
    console = subprocess.Popen([str(Path(sys.executable).with_name("streamwarden")), *command], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sink = RedisAlertSink(redis_url, config=RedisSinkConfig(prefix=prefix))
    arrivals: dict[str, float] = {}  # stream id -> arrival time at the live-list client
    page_loads: list[float] = []
    stop = threading.Event()
    try:
        started_line = console.stdout.readline()  # type: ignore[union-attr]
        address = re.search(r"http://[^/ ]+", started_line)
        if address is None:
            raise SystemExit(f"the console did not start: {started_line}{console.communicate()[1]}")
        url = address.group(0)
        httpx.get(url + "/").raise_for_status()

        def live_list() -> None:
            try:
                with httpx.stream("GET", url + "/events?after=0", timeout=None) as response:
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            arrivals[line[4:]] = time.time()
                        if stop.is_set():
                            return
            except httpx.HTTPError:  # the console stopped
                return

        def pages() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    started = time.perf_counter()
                    http.get("/").raise_for_status()
                    page_loads.append(time.perf_counter() - started)
                    stop.wait(args.page_every)

        readers = [threading.Thread(target=live_list, daemon=True), threading.Thread(target=pages, daemon=True)]
        for reader in readers:
            reader.start()
        time.sleep(1.0)  # the live list is connected
        batch = max(1, round(args.rate / 10))
        written, started = 0, time.monotonic()
        while time.monotonic() - started < args.seconds:
            now = time.time()
            sink.add(new_alert(event_id=f"bench-{written + i}", entity=f"card-{(written + i) % 500:06d}",
                               domain="transactions", score=9.0, threshold=3.5, detector="bench", model_version="v1",
                               event_ts=now, top_features=[("CARD_AMOUNT_ZSCORE", 42.0)]) for i in range(batch))
            written += sink.flush()
            time.sleep(max(0.0, started + written / args.rate - time.monotonic()))
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # the last alerts reach the live list
        stop.set()
        ids = [entry_id.decode() for entry_id, _ in redis.Redis.from_url(redis_url).xrange(f"{prefix}alerts")]
        shown = [arrivals[i] - int(i.split("-")[0]) / 1000 for i in ids if i in arrivals]
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": f"STREAMWARDEN_REDIS__PREFIX={prefix} streamwarden {' '.join(command)}",
            "bench": "python -m bench.console_load " + " ".join(sys.argv[1:] if argv is None else argv),
            "alerts_written": written, "rate": round(written / elapsed, 1), "alerts_shown": len(shown),
            "new_alert_shown": summary(shown), "page_load": summary(page_loads),
            "targets": {"page_load_ms": 300, "new_alert_shown_ms": 1000},
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        }
    finally:
        stop.set()
        console.terminate()
        console.wait(timeout=30)
        client = sink.client
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        sink.close()
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
