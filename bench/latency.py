"""Kafka record to Redis alert latency of `streamwarden run` as a user runs it, at a set share of its top rate.

Steps, each a `streamwarden` command in its own process (shipped settings; only the topic name and a fresh
group are set, as a user would):
  1. `streamwarden dev up` (local Kafka + Redis);
  2. with `--rate half` (the default), the worker's top rate on this machine now: the whole simulator stream
     (`streamwarden produce --scale 5000 --days 30`) into a topic of its own, then `streamwarden run` over it, its
     steady events/s (10 % to 90 % of the stream) read from its Prometheus counter, as `bench.peers` does; the paced
     stream below runs at half of it (a fixed rate from an earlier session overloads a slower VM, or idles a faster one);
  3. `streamwarden run --domain transactions --group-id G --idle-timeout 30` with `STREAMWARDEN_TOPICS__TRANSACTIONS=T`,
     started first so it is waiting on the empty topic;
  4. `streamwarden produce --scale 5000 --days 30 --topic T --rate R --limit N` (simulator transactions, paced).
Latency of an alert = its Redis stream entry time (the XADD inside the sink's script: when subscribers can see it)
minus its Kafka record's timestamp (CreateTime, set by the producer at send). Alerts of the first `--warmup-s`
seconds of the stream are left out. The alerts are this run's: simulator ids carry a run id.

    .venv/bin/python -m bench.latency --seconds 60                  # half of the top rate measured in the same run
    .venv/bin/python -m bench.latency --rate 6400 --seconds 60      # a set rate
    .venv/bin/python -m bench.latency --seconds 60 --client confluent   # the optional fast client
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import write_result
from bench.run_speed import ROOT, add_client_option, cli, results_path, worker_settings_env

STREAM = "streamwarden:alerts"  # the shipped redis.prefix + "alerts"


def record_times(bootstrap: str, topic: str, expected: int) -> dict[str, int]:
    """event_id -> Kafka record timestamp (ms) for every record of `topic`."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=5000)
    out: dict[str, int] = {}
    for message in consumer:
        out[json.loads(message.value)["event_id"]] = message.timestamp
        if len(out) >= expected:
            break
    consumer.close()
    return out


def top_rate(bootstrap: str, stamp: str, client: str | None) -> dict:
    """The worker's top steady rate on this machine now, as `bench.peers` measures it: the whole simulator stream
    produced unpaced into a topic of its own, then `streamwarden run` over it (shipped settings, events/s between the
    10 % and the 90 % mark, read from its Prometheus counter)."""
    from bench.peers.__main__ import run_worker, topic_size

    topic = f"latency-top-{stamp}"
    cli("produce", "--scale", "5000", "--days", "30", "--topic", topic)
    total = topic_size(bootstrap, topic)
    row, command = run_worker("transactions", topic, topic, total, client)
    if not row.get("steady_events_per_s"):
        raise SystemExit(f"could not measure the top rate: {row}")
    return {**row, "command": command}


def rate_arg(value: str) -> str | float:
    """`--rate`: "half" or events/s (argparse calls a bad value "invalid rate_arg value")."""
    return value if value == "half" else float(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="half", type=rate_arg,
                    help="events/s sent; 'half' (default): half the worker's top steady rate, measured first in this run")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=10.0)
    add_client_option(ap, "latency")
    args = ap.parse_args(argv)
    out = results_path(args, "latency")
    import redis

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    topic = group = f"latency-{stamp}"
    cli("dev", "up")
    bootstrap = os.environ.get("STREAMWARDEN_KAFKA", "127.0.0.1:9092")
    client = redis.Redis.from_url(os.environ.get("STREAMWARDEN_REDIS_URL", "redis://127.0.0.1:6379/0"))
    top = top_rate(bootstrap, stamp, args.client) if args.rate == "half" else None
    rate = round(top["steady_events_per_s"] / 2) if top else args.rate
    limit = int(rate * args.seconds)
    start_id = client.xinfo_stream(STREAM)["last-generated-id"].decode() if client.exists(STREAM) else "0-0"
    cli("produce", "--limit", "1", "--topic", topic)  # the topic exists before the worker subscribes
    settings_env = worker_settings_env(topic, args.client)
    env = {**os.environ, **settings_env}
    run_args = ["run", "--domain", "transactions", "--group-id", group, "--idle-timeout", "30"]
    exe = str(Path(sys.executable).with_name("streamwarden"))
    # the worker's output goes to a file: a pipe nobody reads during the run would block its logging when full
    worker_log = tempfile.TemporaryFile("w+")
    worker = subprocess.Popen([exe, *run_args], cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
                              text=True)
    time.sleep(15)  # imports, models, group join: the worker waits on the topic before the paced stream starts
    produce_args = ["produce", "--scale", "5000", "--days", "30", "--topic", topic, "--rate", str(rate),
                    "--limit", str(limit)]
    produced = cli(*produce_args, capture=True).stdout
    run_id = re.search(r"run\s+id\s+(\w+)", produced).group(1)  # type: ignore[union-attr]
    worker.wait(timeout=600)
    worker_log.seek(0)
    log = worker_log.read()
    times = record_times(bootstrap, topic, limit + 1)
    first_ms = min(ms for event_id, ms in times.items() if run_id in event_id)
    latencies, sent_at, alerts = [], [], 0
    for entry_id, fields in client.xrange(STREAM, min=f"({start_id}"):
        event_id = json.loads(fields[b"alert"])["event_id"]
        if run_id not in event_id or event_id not in times:
            continue
        alerts += 1
        sent_ms = times[event_id]
        if sent_ms - first_ms >= args.warmup_s * 1000:
            latencies.append(int(entry_id.decode().split("-")[0]) - sent_ms)
            sent_at.append(round((sent_ms - first_ms) / 1000, 2))
    lat = np.array(latencies, dtype=float)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commands": [" ".join(f"{k}={v}" for k, v in settings_env.items()) + f" streamwarden {' '.join(run_args)}",
                     f"streamwarden {' '.join(produce_args)}"],
        "rate": rate, "top_rate": top, "events": limit, "alerts": alerts, "alerts_after_warmup": len(lat),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
        "worker_stopped": log.strip().splitlines()[-1][:300] if log.strip() else "",
        "alerts_sent_s_latency_ms": list(zip(sent_at, latencies, strict=True)),  # where in the run the tail sits
        "load_average": os.getloadavg(), "cpus": os.cpu_count(),
    }
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
