"""Issue 14: the shipped worker side by side with what users would write instead.

One topic of simulator events (1 partition) is produced once; then each consumer runs alone, one after another,
in its own fresh process, with a fresh consumer group, reading the topic from the beginning:

  a  kafka-python `KafkaConsumer.poll` loop, no processing            bench/peers/kafka_python_raw.py
  b  confluent-kafka `Consumer.consume` loop, no processing           bench/peers/confluent_raw.py
  c  kafka-python + json.loads + River QuantileFilter(HalfSpaceTrees) + redis-py XADD   river_script.py
  d  Quix Streams Application + the same River model + quixstreams' RedisSink          quix_app.py
  e  `streamwarden run --domain D` with shipped settings (STREAMWARDEN_TOPICS__D=T, a fresh --group-id,
     --metrics-port to read its `streamwarden_events_total`, polled every 0.5 s)
  f  the same with the optional fast client (STREAMWARDEN_KAFKA__CLIENT=confluent: `pip install streamwarden[fast]`)

Steady events/s: events between the 10 % and the 90 % mark of the stream over the time between them (process
start, group join and tail excluded). Wall s: the whole process (the worker's minus its 5 s idle timeout).

    .venv/bin/python -m bench.peers                      # transactions, --scale 5000 --days 30
    .venv/bin/python -m bench.peers --scale 200 --days 7 --out /tmp/peers.json    # smoke run
    .venv/bin/python -m bench.peers --domain sensors     # 50 devices x 8 channels x 4,000 steps
    .venv/bin/python -m bench.peers --domain sensors --peers ce --rounds 3   # c, e, c, e, c, e; median ratio
    .venv/bin/python -m bench.peers --domain sensors --peers e --topic T      # the worker alone on an existing topic
    .venv/bin/python -m bench.peers --peers def --rounds 2    # Quix app, worker, worker with the fast client

With --rounds N the consumers run N times in turn (a fresh group each time) and the median of the N worker / peer
ratios is reported beside each round's: the machine's speed drifts over minutes, so one round can mislead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.peers.common import RESULT_TAG
from bench.run_speed import IDLE_S, ROOT, cli

PEERS = [  # id, what, module, module it needs
    ("a", "kafka-python poll loop (no processing)", "bench.peers.kafka_python_raw", "kafka"),
    ("b", "confluent-kafka consume loop (no processing)", "bench.peers.confluent_raw", "confluent_kafka"),
    ("c", "script: kafka-python+River+redis-py", "bench.peers.river_script", "river"),
    ("d", "Quix Streams+River+RedisSink", "bench.peers.quix_app", "quixstreams"),
]
WORKERS = [  # id, what, kafka.client (None: the shipped kafka-python), module it needs
    ("e", "streamwarden run (shipped)", None, "kafka"),
    ("f", "streamwarden run, kafka.client=confluent", "confluent", "confluent_kafka"),
]
WORKER_IDS = {w[0] for w in WORKERS}
PEER_TIMEOUT_S = 1800


def produce(domain: str, topic: str, args: argparse.Namespace) -> tuple[int, str]:
    """Fill `topic` once; return the events sent and the command that did it."""
    if domain == "transactions":
        cmd = ["produce", "--scale", str(args.scale), "--days", str(args.days), "--topic", topic]
        out = cli(*cmd, capture=True).stdout
        return int(re.search(r"sent (\d+) events \(0 failed\)", out).group(1)), "streamwarden " + " ".join(cmd)
    # `streamwarden produce --domain sensors` simulates 3 devices x 6 channels; 50 x 8 needs the simulator's API.
    from ingest.produce import events_from_simulator, produce_events
    from ingest.producer import EventProducer
    from pipeline.settings import load_settings

    events = events_from_simulator("sensors", n_devices=50, channels=8, n_steps=args.sensor_steps)
    with EventProducer(load_settings().kafka.bootstrap_servers) as producer:
        report = produce_events(events, producer, topic, "sensors", progress=False)
    return report.sent, (f"ingest.produce.produce_events(events_from_simulator('sensors', n_devices=50, "
                         f"channels=8, n_steps={args.sensor_steps}), EventProducer(...), '{topic}', 'sensors')")


def topic_size(bootstrap: str, topic: str) -> int:
    """Records in `topic` (end minus beginning offsets over its partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            raise SystemExit(f"topic {topic!r} does not exist")
        ends, starts = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
        return sum(ends[p] - starts[p] for p in parts)
    finally:
        consumer.close()


def not_importable(module: str) -> str | None:
    """Why a consumer is skipped, or None when `module` can be imported."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not importable (pip install -e '.[bench]')"
    return None


def run_peer(module: str, argv: list[str]) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=PEER_TIMEOUT_S)
    wall = time.perf_counter() - t0
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {(done.stderr or done.stdout)[-600:]}"}
    return {**json.loads(lines[-1][len(RESULT_TAG):]), "wall_s": wall}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events_counter(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.4) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("streamwarden_events_total"))


def crossing(samples: list[tuple[float, float]], target: float) -> float | None:
    """When the counter passed `target`, interpolated between the two samples around it."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if c0 < target <= c1:
            return t0 + (target - c0) / (c1 - c0) * (t1 - t0)
    return None


def run_worker(domain: str, topic: str, group: str, total: int, client: str | None = None) -> tuple[dict, str]:
    port = free_port()
    argv = ["run", "--domain", domain, "--group-id", group, "--idle-timeout", str(IDLE_S), "--metrics-port", str(port)]
    settings = {f"STREAMWARDEN_TOPICS__{domain.upper()}": topic, **({"STREAMWARDEN_KAFKA__CLIENT": client} if client else {})}
    env = {**os.environ, **settings}
    command = " ".join(f"{k}={v}" for k, v in settings.items()) + f" streamwarden {' '.join(argv)}"
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(Path(sys.executable).with_name("streamwarden")), *argv], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        while True:
            count = events_counter(port)
            if count is not None:
                samples.append((time.perf_counter(), count))
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - t0 - IDLE_S
        log.seek(0)
        text = log.read()
    if proc.returncode:
        return {"error": f"exit {proc.returncode}: {text[-600:]}"}, command
    found = re.findall(r"events[=\"': ]+(\d+)", text.split("worker stopped")[-1])
    events = int(found[0]) if found else int(max((c for _, c in samples), default=0))
    lo, hi = math.ceil(0.1 * total), math.ceil(0.9 * total)
    t_lo, t_hi = crossing(samples, lo), crossing(samples, hi)
    steady = (hi - lo) / (t_hi - t_lo) if t_lo is not None and t_hi is not None and t_hi > t_lo else None
    return {"events": events, "steady_events_per_s": steady, "wall_s": wall, "metrics_samples": len(samples),
            "notes": "wall minus the 5 s idle timeout"}, command


def run_round(domain: str, topic: str, total: int, args: argparse.Namespace, tag: str) -> list[dict]:
    """Each chosen peer, then the worker, once over `topic`, each with a fresh consumer group."""
    bootstrap, redis_url = args.bootstrap, args.redis_url
    rows = []
    for pid, what, module, needs in PEERS:
        if pid not in args.peers:
            continue
        group = f"peers-{pid}-{domain}-{tag}"
        argv = ["--bootstrap", bootstrap, "--topic", topic, "--group", group, "--events", str(total),
                "--domain", domain, "--redis-url", redis_url]
        row = {"id": pid, "peer": what, "command": f"python -m {module} {' '.join(argv)}"}
        if missing := not_importable(needs):
            row["skipped"] = missing
        else:
            row.update(run_peer(module, argv))
        rows.append(row)
        print(f"[peers] {domain} {pid}: {json.dumps(row)}", file=sys.stderr, flush=True)
        time.sleep(2)
    for wid, what, client, needs in WORKERS:
        if wid not in args.peers:
            continue
        if missing := not_importable(needs):
            rows.append({"id": wid, "peer": what, "skipped": missing})
            continue
        result, command = run_worker(domain, topic, f"peers-{wid}-{domain}-{tag}", total, client)
        rows.append({"id": wid, "peer": what, "command": command, **result})
        print(f"[peers] {domain} {wid}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    for wid, *_ in WORKERS:
        worker = next((r.get("steady_events_per_s") for r in rows if r["id"] == wid), None)
        for r in rows:
            if worker and r.get("steady_events_per_s") and r["id"] not in WORKER_IDS:
                r[f"{wid}_over_peer"] = worker / r["steady_events_per_s"]
    return rows


def bench_domain(domain: str, args: argparse.Namespace, stamp: str) -> dict:
    """One topic, then `args.rounds` rounds of the consumers one after another: the machine's speed drifts over
    minutes, so each round's ratios compare neighbours in time, and the median over rounds is the figure."""
    if args.topic:  # an existing topic (e.g. the same one for two commits): its events, as produced before
        topic, total, produce_cmd = args.topic, topic_size(args.bootstrap, args.topic), "(an existing topic)"
    else:
        topic = f"peers-{domain}-{stamp}"
        total, produce_cmd = produce(domain, topic, args)
    rows = []
    for k in range(1, args.rounds + 1):
        rows += [{"round": k, **r} for r in run_round(domain, topic, total, args, stamp if k == 1 else f"{stamp}-r{k}")]
    medians = {}
    for wid, *_ in WORKERS:
        ratios: dict[str, list[float]] = {}
        for r in rows:
            if f"{wid}_over_peer" in r:
                ratios.setdefault(r["id"], []).append(r[f"{wid}_over_peer"])
        if ratios:
            medians[wid] = {pid: float(np.median(v)) for pid, v in ratios.items()}
    return {"topic": topic, "events": total, "produce": produce_cmd, "rounds": args.rounds, "peers": rows,
            "median_over_peer": medians}


def print_table(domain: str, block: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{domain}: {block['events']:,} events, 1 partition")
    workers = list(block["median_over_peer"])
    for name in ("round", "peer", "events", "steady events/s", "wall s", *[f"{w} / peer" for w in workers]):
        table.add_column(name, justify="left" if name == "peer" else "right")
    for r in block["peers"]:
        if "steady_events_per_s" not in r:
            table.add_row(str(r["round"]), f"{r['id']}  {r['peer']}", "-",
                          r.get("skipped") or r.get("error", "")[:80], "-", *["-"] * len(workers))
            continue
        steady = r["steady_events_per_s"]
        ratios = [r.get(f"{w}_over_peer") for w in workers]
        table.add_row(str(r["round"]), f"{r['id']}  {r['peer']}", f"{r['events']:,}", f"{steady:,.0f}" if steady else "-",
                      f"{r['wall_s']:.1f}", *[f"{x:.2f}x" if x else "-" for x in ratios])
    Console(width=120).print(table)
    for wid, medians in block["median_over_peer"].items():
        for pid, ratio in medians.items():
            print(f"{domain}: {wid} / peer {pid}, median over {block['rounds']} round(s): {ratio:.2f}x")


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "load_average_at_start": os.getloadavg(),
            "platform": platform.platform(), "python": platform.python_version(), "commit": rev.stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", choices=["transactions", "sensors", "all"], default="transactions")
    ap.add_argument("--scale", type=int, default=5000, help="transactions: customers and terminals")
    ap.add_argument("--days", type=int, default=30, help="transactions: days simulated")
    ap.add_argument("--sensor-steps", type=int, default=4000, help="sensors: steps per device (50 devices)")
    ap.add_argument("--peers", default="abcde", help="which peers to run, e.g. 'ce'")
    ap.add_argument("--rounds", type=int, default=1, help="run the consumers this many times, interleaved")
    ap.add_argument("--topic", default=None, help="read this existing topic instead of producing a new one")
    ap.add_argument("--out", default=str(ROOT / "bench/results/peers.json"))
    args = ap.parse_args(argv)
    from pipeline.settings import load_settings

    settings = load_settings()
    args.bootstrap, args.redis_url = settings.kafka.bootstrap_servers, settings.redis.url.get_secret_value()
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "command": "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:]),
              "how": __doc__.split("\n\n")[1].strip(), "domains": {}}
    cli("dev", "up")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    for domain in (["transactions", "sensors"] if args.domain == "all" else [args.domain]):
        result["domains"][domain] = bench_domain(domain, args, stamp)
        print_table(domain, result["domains"][domain])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
