"""Speed of `streamwarden run` as a user runs it: the CLI, shipped settings, a fresh process.

Steps, each a `streamwarden` command in its own process:
  1. `streamwarden dev up` (local Kafka + Redis; already running ones are reused);
  2. `streamwarden produce --scale 5000 --days 30 --topic T` (simulator transactions into a fresh topic T);
  3. `streamwarden run --domain transactions --idle-timeout 5` with `STREAMWARDEN_TOPICS__TRANSACTIONS=T`
     (the documented setting for the topic name) and a fresh consumer group.
  4. `streamwarden backtest --input kafka://T --no-progress --report DIR`: the same events replayed (score,
     then learn, report written), timed the same way.
Reported: events processed (from the worker's own "worker stopped" log line), wall seconds of the worker
process minus its idle timeout, and events/s over that time (process start, imports and the Kafka group
join included, as a user waiting for the command sees it); the backtest's events/s over its whole wall time.

`--busy N` starts N busy-loop processes (pure Python, one core each) before the worker and stops them after
the backtest; their share of the machine's CPU time over the worker's run is reported beside the rates, so a
run with `--busy 2` answers "does the worker fall by at most the share its neighbours take?".

    .venv/bin/python -m bench.run_speed            # writes bench/results/run_speed.json
    .venv/bin/python -m bench.run_speed --busy 2 --out bench/results/run_speed-busy2.json
    .venv/bin/python -m bench.run_speed --client confluent   # the optional fast client (kafka.client)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parents[1]
IDLE_S = 5.0


def cli(*args: str, env: dict[str, str] | None = None, capture: bool = False) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("streamwarden"))
    return subprocess.run([exe, *args], cwd=ROOT, env=env, check=True, text=True,
                          capture_output=capture)


def add_client_option(ap: argparse.ArgumentParser, name: str) -> None:
    """`--client` (the setting kafka.client) and `--out` (default bench/results/<name>[-CLIENT].json)."""
    ap.add_argument("--client", choices=["kafka-python", "confluent"], default=None,
                    help="set kafka.client (default: the shipped one, kafka-python)")
    ap.add_argument("--out", default=None, help=f"default bench/results/{name}[-CLIENT].json")


def results_path(args: argparse.Namespace, name: str) -> str:
    return args.out or str(ROOT / f"bench/results/{name}{'-' + args.client if args.client else ''}.json")


def worker_settings_env(topic: str, client: str | None) -> dict[str, str]:
    """The settings a user sets for the run: the topic name, and kafka.client when asked."""
    env = {"STREAMWARDEN_TOPICS__TRANSACTIONS": topic}
    if client:
        env["STREAMWARDEN_KAFKA__CLIENT"] = client
    return env


def _spin() -> None:
    while True:
        pass


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=5000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes running beside the worker")
    add_client_option(ap, "run_speed")
    args = ap.parse_args(argv)
    out = results_path(args, "run_speed")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    topic, group = f"speed-{stamp}", f"speed-{stamp}"
    cli("dev", "up")
    t0 = time.perf_counter()
    cli("produce", "--scale", str(args.scale), "--days", str(args.days), "--topic", topic)
    produce_s = time.perf_counter() - t0
    settings_env = worker_settings_env(topic, args.client)
    env = {**os.environ, **settings_env}
    run_args = ["run", "--domain", "transactions", "--group-id", group, "--idle-timeout", str(IDLE_S)]
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    busy_pids = [p.pid for p in spinners if p.pid is not None]
    report = Path(tempfile.gettempdir()) / f"run_speed-backtest-{stamp}"
    backtest_args = ["backtest", "--input", f"kafka://{topic}", "--no-progress", "--report", str(report)]
    try:
        busy_cpu0 = cpu_seconds(busy_pids)
        t0 = time.time()
        done = cli(*run_args, env=env, capture=True)
        wall = time.time() - t0 - IDLE_S
        busy_share = (cpu_seconds(busy_pids) - busy_cpu0) / ((wall + IDLE_S) * (os.cpu_count() or 1))
        t0 = time.time()
        cli(*backtest_args, capture=True)
        backtest_wall = time.time() - t0
    finally:
        for p in spinners:
            p.terminate()
    log = done.stdout + done.stderr
    events = int(re.findall(r"events[=\"': ]+(\d+)", log.split("worker stopped")[-1])[0])
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commands": [f"streamwarden produce --scale {args.scale} --days {args.days} --topic {topic}",
                     " ".join(f"{k}={v}" for k, v in settings_env.items()) + f" streamwarden {' '.join(run_args)}",
                     f"streamwarden {' '.join(backtest_args)}"],
        "events": events, "produce_s": round(produce_s, 1), "worker_wall_s_minus_idle": round(wall, 1),
        "events_per_s_including_start": round(events / wall),
        "backtest_wall_s": round(backtest_wall, 1), "backtest_events_per_s_including_start": round(events / backtest_wall),
        "busy_processes": args.busy, "busy_share_of_cpu_during_worker": round(busy_share, 3),
        "load_average": os.getloadavg(), "cpus": os.cpu_count(),
    }
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
