"""`make bench`: every benchmark in turn, each in its own process, then BENCHMARKS.md is up to date.

    .venv/bin/python -m bench.run_all            # full: about 15 minutes on 2 loaded cores
    .venv/bin/python -m bench.run_all --quick    # about 3 minutes: fewer sizes and events
    .venv/bin/python -m bench.run_all --only models,memory
    .venv/bin/python -m bench.run_all --device cuda   # model stage on a GPU as well

Order: model stage and memory first (no services), then the Kafka/Redis benchmarks: decode and the
Redis sink (their own scripts), the end-to-end pipeline (ceilings, batch sizes, River peer,
latency, scaling) and the profile. A failing benchmark is reported and the others still run;
the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

NAMES = ("models", "memory", "decode", "redis_sink", "pipeline", "profile")


def commands(quick: bool, device: str | None) -> dict[str, list[list[str]]]:
    py = [sys.executable]
    q = ["--quick"] if quick else []
    models = [[*py, "-m", "bench.bench_models", *q]]
    if device and device != "cpu":
        models.append([*py, "-m", "bench.bench_models", "--device", device, *q])
    return {
        "models": models,
        "memory": [[*py, "-m", "bench.bench_memory", *(["--sizes", "10000,100000"] if quick else [])]],
        "decode": [[*py, "bench/bench_decode.py", "--repeats", "3" if quick else "7",
                    "--json", str(RESULTS / "decode.json")]],
        "redis_sink": [[*py, "bench/bench_redis_sink.py", "--alerts", "5000" if quick else "20000",
                        "--rounds", "50" if quick else "200"]],
        "pipeline": [[*py, "-m", "bench.bench_pipeline", *q]],
        "profile": [[*py, "-m", "bench.bench_profile", *(["--events", "10000"] if quick else [])]],
    }


def service_env() -> tuple[dict[str, str], Any]:
    """Kafka/Redis addresses for the benchmarks (env: STREAMWARDEN_KAFKA / STREAMWARDEN_REDIS_URL), starting
    the local services when they are not given (ports from STREAMWARDEN_KAFKA_PORT / STREAMWARDEN_REDIS_PORT,
    so a benchmark can have a broker of its own). Returns (env, the LocalServices this call started or None)."""
    env = dict(os.environ)
    started = None
    if not (env.get("STREAMWARDEN_KAFKA") and env.get("STREAMWARDEN_REDIS_URL")):
        from pipeline.services import LocalServices

        services = LocalServices.from_env()
        if services.ensure_up():
            started = services
        env.setdefault("STREAMWARDEN_KAFKA", services.kafka_bootstrap)
        env.setdefault("STREAMWARDEN_REDIS_URL", services.redis_url)
    env.setdefault("PYTHONPATH", str(ROOT))
    return env, started


def run_logged(cmd: list[str], env: dict[str, str] | None, log: Path) -> int:
    """Run cmd, echoing its output and keeping a copy in bench/results/<name>.log."""
    with log.open("w") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            f.write(line)
        return proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 3 minutes instead of about 15")
    parser.add_argument("--only", help=f"comma list out of {','.join(NAMES)}")
    parser.add_argument("--device", default=None, help="also run the model stage on this device (e.g. cuda)")
    args = parser.parse_args(argv)
    wanted = args.only.split(",") if args.only else list(NAMES)
    unknown = set(wanted) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {','.join(NAMES)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plan = commands(args.quick, args.device)
    env, services = service_env() if set(wanted) & {"decode", "redis_sink", "pipeline", "profile"} else (None, None)
    outcome: list[tuple[str, int, float]] = []
    started = time.perf_counter()
    try:
        for name in wanted:
            for cmd in plan[name]:
                print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
                t0 = time.perf_counter()
                rc = run_logged(cmd, env, RESULTS / f"{name}.log")
                outcome.append((name, rc, time.perf_counter() - t0))
    finally:
        if services is not None and not os.environ.get("STREAMWARDEN_KEEP_SERVICES"):
            services.down()
    print("\n=== summary")
    for name, rc, took in outcome:
        print(f"  {name:<11} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {took:6.0f} s")
    print(f"  total {time.perf_counter() - started:.0f} s; results in bench/results/, figures in BENCHMARKS.md")
    return 0 if all(rc == 0 for _, rc, _ in outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
