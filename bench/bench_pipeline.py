"""End-to-end: real Kafka -> runner -> Redis, next to the raw ceilings, the River peer, latency and scaling.

    .venv/bin/python -m bench.bench_pipeline            # full (about 5 minutes on 2 loaded cores)
    .venv/bin/python -m bench.bench_pipeline --quick    # two batch sizes, fewer events

Kafka and Redis: `STREAMWARDEN_KAFKA` / `STREAMWARDEN_REDIS_URL` when set, else the project's local
services (`LocalServices.from_env().ensure_up()`; stopped at the end only if this run started them).
Every figure below comes from the same run, the same broker and the same pre-produced topics
(6 partitions, keyed by card / device, simulator events):

- ceiling: kafka-python `KafkaConsumer.poll(max_records=B)` of the same events with no processing
  (one process), and raw pipelined `XADD` of alert payloads (500 per pipeline) to the same Redis;
- end-to-end: the worker exactly as `streamwarden run` builds it (`pipeline.worker.build_live_runner`:
  BatchConsumer + decode + StreamProcessor + RedisAlertSink + DLQ, default settings except
  `runner.max_records = B`), in process, one fresh consumer group per run. Rate = records after the
  first poll / time from the first non-empty poll to the end of the batch that reached the last
  record (group join excluded; periodic flushes and commits included);
- peer: the same worker with River's Half-Space Trees as the transactions detector
  (`stream_models.halfspace_trees`, added to the pipeline's detector registry by this benchmark
  when the registry lacks it), same decode, features, threshold, learner cadence and sink;
- latency: a separate process produces fresh events (to a fresh topic per run) at 50 % of the best
  end-to-end rate (full run: also with `runner.commit_interval_s = 0.1`, and at 25 %) with
  `ts` = send time; alerts are read back from the Redis stream. "to alert" = alert_ts - ts (alert
  built), "to Redis" = the stream entry's XADD time - ts (visible to subscribers). The detector
  flags a known fraction (`transactions.threshold_quantile = 0.95`); the first 2 s are warm-up;
- scaling: 1 and 2 worker processes (each built by `build_live_runner`) in one consumer group on
  the 6-partition topic; they start together once every worker holds its partitions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import ROOT, Report, percentile, verdict

PARTITIONS = 6
FULL_SIZES = (256, 512, 1024, 2048, 4096, 8192)
QUICK_SIZES = (512, 4096)
TARGETS = {"transactions": 0.80, "sensors": 0.60, "peer": 1.5, "p99_ms": 200.0, "scaling": 1.7}


# ----------------------------------------------------------------------------- services and data


@dataclasses.dataclass
class Env:
    bootstrap: str
    redis_url: str
    run: str
    topics: dict[str, str]
    services: Any = None  # LocalServices this run started (stopped at the end)
    state_root: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="swbench-")))

    def prefix(self, tag: str) -> str:
        return f"bench:{self.run}:{tag}:"


@contextlib.contextmanager
def environment(topics: dict[str, int]) -> Iterator[Env]:
    """Broker + Redis, and fresh topics `{role: partitions}` named bench-<run>-<role>."""
    from ingest.consumer import create_topics

    started = None
    bootstrap, redis_url = os.environ.get("STREAMWARDEN_KAFKA"), os.environ.get("STREAMWARDEN_REDIS_URL")
    if not (bootstrap and redis_url):
        from pipeline.services import LocalServices

        services = LocalServices.from_env()
        if services.ensure_up():
            started = services
        bootstrap = bootstrap or services.kafka_bootstrap
        redis_url = redis_url or services.redis_url
    run = uuid.uuid4().hex[:8]
    names = {role: f"bench-{run}-{role}" for role in topics}
    create_topics(bootstrap, {names[r]: p for r, p in topics.items()})
    env = Env(bootstrap, redis_url, run, names, started)
    try:
        yield env
    finally:
        cleanup(env)


def cleanup(env: Env) -> None:
    import shutil

    import redis

    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=env.bootstrap, client_id="streamwarden-bench")
        existing = set(admin.list_topics())
        admin.delete_topics([t for t in existing if t.startswith(f"bench-{env.run}-")])
        admin.close()
    except Exception as exc:  # a leftover bench topic is harmless
        print(f"(could not delete bench topics: {exc})")
    try:
        client = redis.Redis.from_url(env.redis_url)
        keys = list(client.scan_iter(match=f"bench:{env.run}:*", count=10_000))
        for i in range(0, len(keys), 5_000):
            client.delete(*keys[i : i + 5_000])
        client.close()
    except Exception as exc:
        print(f"(could not delete bench keys: {exc})")
    shutil.rmtree(env.state_root, ignore_errors=True)
    if env.services is not None and not os.environ.get("STREAMWARDEN_KEEP_SERVICES"):
        env.services.down()


def simulated(domain: str, n: int, seed: int = 0) -> list[Any]:
    from ingest.simulator import SensorSimulator, TransactionSimulator

    if domain == "sensors":
        devices = 50
        return list(SensorSimulator(seed=seed, n_devices=devices, channels=8, n_steps=-(-n // devices)).events())[:n]
    customers = max(200, n // 20)
    return list(TransactionSimulator(seed=seed, n_customers=customers, n_terminals=customers, days=10).events())[:n]


def produce(env: Env, topic: str, domain: str, events: Sequence[Any]) -> float:
    """Send the events keyed like production; returns seconds."""
    from ingest.producer import EventProducer
    from ingest.schemas import encode_event, event_key

    t0 = time.perf_counter()
    with EventProducer(env.bootstrap, linger_ms=20, config={"batch_size": 256 * 1024}) as producer:
        for e in events:
            producer.send(topic, event_key(domain, e), encode_event(e))
        producer.flush()
        if producer.failed:
            raise RuntimeError(f"{producer.failed} events were not delivered to {topic}: {producer.last_error}")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- ceilings


def raw_consume(env: Env, topic: str, n: int, max_records: int) -> dict[str, Any]:
    """kafka-python alone: poll the whole topic, touching nothing but the message count."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="streamwarden-bench-raw")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got, first_n, t_first, t_last = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000, max_records=max_records)
        k = sum(len(v) for v in batch.values())
        if k and not got:
            t_first, first_n = time.perf_counter(), k
        got += k
        t_last = time.perf_counter()
    consumer.close()
    rate = (got - first_n) / (t_last - t_first) if t_last > t_first else float("nan")
    return {"records": got, "rate": rate}


def raw_xadd(env: Env, n: int, per_pipeline: int = 500) -> float:
    """Pipelined XADD of realistic alert payloads (MAXLEN ~), alerts/s."""
    import redis

    from sinks.alert import Alert, make_alert_id

    client = redis.Redis.from_url(env.redis_url)
    stream = f"{env.prefix('xadd')}alerts"
    now = time.time()
    payloads = [Alert(make_alert_id(f"e{i}", "dense_autoencoder", "v1"), f"e{i}", f"card-{i % 5000}", "transactions",
                      3.2, 1.1, "v1", now, now, [("TX_AMOUNT", 8.1), ("CARD_AMOUNT_ZSCORE", 3.3), ("HOUR_SIN", 1.2)]
                      ).to_json() for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, per_pipeline):
        pipe = client.pipeline(transaction=False)
        for p in payloads[i : i + per_pipeline]:
            pipe.xadd(stream, {"alert": p}, maxlen=1_000_000, approximate=True)
        pipe.execute()
    rate = n / (time.perf_counter() - t0)
    client.delete(stream)
    client.close()
    return rate


# ----------------------------------------------------------------------------- the worker


def ensure_halfspace_trees() -> None:
    """Make River's Half-Space Trees selectable as a transactions detector (pipeline registry)."""
    from pipeline import domains

    if "halfspace_trees" in domains.TRANSACTION_DETECTORS:
        return

    def _halfspace_trees(names: list[str], m: Any, device: str | None) -> Any:
        from stream_models.halfspace_trees import HalfSpaceTreesDetector

        return HalfSpaceTreesDetector(names, seed=m.seed)

    domains.TRANSACTION_DETECTORS["halfspace_trees"] = _halfspace_trees


def worker_settings(env: Env, domain: str, tag: str, max_records: int, group: str | None = None,
                    model: dict[str, Any] | None = None, runner: dict[str, Any] | None = None,
                    tx_topic: str | None = None) -> Any:
    from pipeline.settings import load_settings

    state = env.state_root / tag
    state.mkdir(parents=True, exist_ok=True)
    return load_settings(
        kafka={"bootstrap_servers": env.bootstrap, "group_id": group or f"bench-{env.run}-{tag}"},
        topics={"transactions": tx_topic or env.topics.get("transactions", "transactions"),
                "sensors": env.topics.get("sensors", "sensors"), "labels": env.topics["labels"]},
        redis={"url": env.redis_url, "prefix": env.prefix(tag)},
        runner={"domain": domain, "max_records": max_records, "state_dir": str(state), **(runner or {})},
        **({domain: model} if model else {}),
    )


class Timed:
    """Wraps a built runner: steady-state rate from the end of the first batch (model built, group joined)
    to the end of the batch that reached `n` records. A profiler, if given, covers that same span."""

    def __init__(self, runner: Any, n: int, profiler: Any = None) -> None:
        self.runner = runner
        self.t_first = self.t_last = 0.0
        self.first_n = 0
        step = runner.step

        def timed_step() -> int:
            k = step()
            if k:
                self.t_last = time.perf_counter()
                if not self.first_n:
                    self.t_first, self.first_n = self.t_last, k
                    if profiler is not None:
                        profiler.enable()
                elif profiler is not None and runner.stats.records >= n:
                    profiler.disable()
            return k

        runner.step = timed_step

    def rate(self) -> float:
        done = self.runner.stats.records - self.first_n
        return done / (self.t_last - self.t_first) if self.t_last > self.t_first else float("nan")


def pipeline_run(env: Env, domain: str, n: int, max_records: int, tag: str, *, model: dict[str, Any] | None = None,
                 profile_to: Path | None = None) -> dict[str, Any]:
    """One in-process worker over the pre-produced topic, as `streamwarden run` builds it."""
    from pipeline.worker import build_live_runner

    settings = worker_settings(env, domain, tag, max_records, model=model)
    runner, close = build_live_runner(settings, max_events=n, idle_timeout_s=60.0)
    profiler = None
    if profile_to is not None:
        import cProfile

        profiler = cProfile.Profile()
    timed = Timed(runner, n, profiler)
    try:
        stats = runner.run()
    finally:
        close()
        if profiler is not None:
            profiler.disable()
            profile_to.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(profile_to))
    return {"domain": domain, "batch": max_records, "records": stats.records, "events": stats.events,
            "alerts": stats.alerts, "rejects": stats.rejects, "rate": timed.rate(),
            "detector": next(iter(runner.processors.values())).detector_name}


# ----------------------------------------------------------------------------- latency


def paced_producer(args: dict[str, Any]) -> None:
    """Child process: wait for the go file, then send fresh transactions at `rate`/s for `seconds` s."""
    import msgspec

    from ingest.producer import EventProducer
    from ingest.schemas import encode_event

    base = simulated("transactions", int(args["rate"] * args["seconds"]) + 1000, seed=7)
    go = Path(args["go"])
    while not go.exists():
        time.sleep(0.02)
    sent = 0
    with EventProducer(args["bootstrap"]) as producer:  # default linger_ms (5 ms), acks=all, idempotent
        t0 = time.time()
        while True:
            now = time.time()
            if now - t0 >= args["seconds"]:
                break
            due = min(len(base), int((now - t0) * args["rate"]))
            while sent < due:
                e = msgspec.structs.replace(base[sent], event_id=f"lat-{sent}", ts=time.time())
                producer.send(args["topic"], e.card_id.encode(), encode_event(e))
                sent += 1
            time.sleep(0.001)
        producer.flush()
    Path(args["out"]).write_text(json.dumps({"sent": sent, "seconds": time.time() - t0, "t0": t0}))


def latency_run(env: Env, rate: float, seconds: float, max_records: int, tag: str,
                runner_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    import redis

    from ingest.consumer import create_topics
    from pipeline.worker import build_live_runner
    from sinks.alert import Alert

    topic = f"bench-{env.run}-{tag}"  # a fresh topic per run: no backlog from an earlier run
    create_topics(env.bootstrap, {topic: PARTITIONS})
    settings = worker_settings(env, "transactions", tag, max_records, model={"threshold_quantile": 0.95},
                               runner=runner_overrides, tx_topic=topic)
    runner, close = build_live_runner(settings, idle_timeout_s=10.0)  # covers the producer's start
    go, out = env.state_root / f"{tag}.go", env.state_root / f"{tag}.json"
    child = subprocess.Popen([sys.executable, "-m", "bench.bench_pipeline", "--paced-producer", json.dumps(
        {"rate": rate, "seconds": seconds, "go": str(go), "out": str(out), "bootstrap": env.bootstrap,
         "topic": topic})], cwd=ROOT)
    poll = runner.source.poll

    def gated_poll(max_records: int, timeout_ms: int) -> list[Any]:
        records = poll(max_records, timeout_ms)
        if not go.exists() and runner.source.assignment():
            go.touch()  # the worker holds its partitions: start producing
        return records

    runner.source.poll = gated_poll
    try:
        stats = runner.run()
    finally:
        close()
        child.wait(timeout=60)
    produced = json.loads(out.read_text()) if out.exists() else {"sent": 0, "seconds": seconds, "t0": 0.0}
    client = redis.Redis.from_url(env.redis_url)
    entries = client.xrange(f"{env.prefix(tag)}alerts")
    client.close()
    to_alert, to_redis, at = [], [], []
    warm_until = produced["t0"] + 2.0
    for entry_id, fields in entries:
        alert = Alert.from_json(fields[b"alert"])
        if alert.event_ts < warm_until:
            continue
        to_alert.append((alert.alert_ts - alert.event_ts) * 1000)
        to_redis.append((int(entry_id.split(b"-")[0]) / 1000 - alert.event_ts) * 1000)
        at.append(alert.event_ts - produced["t0"])
    # when the slowest alerts happened (seconds into the run): one stall, or spread out?
    slowest = sorted(zip(to_redis, at, strict=True), reverse=True)[:5]
    return {"target_rate": rate, "sent": produced["sent"], "achieved_rate": produced["sent"] / produced["seconds"],
            "records": stats.records, "alerts": len(entries), "measured_alerts": len(to_alert),
            "alert_p50_ms": percentile(to_alert, 50), "alert_p99_ms": percentile(to_alert, 99),
            "redis_p50_ms": percentile(to_redis, 50), "redis_p99_ms": percentile(to_redis, 99),
            "commit_interval_s": settings.runner.commit_interval_s,
            "slowest_to_redis": [{"ms": round(ms, 1), "at_s": round(t, 2)} for ms, t in slowest]}


# ----------------------------------------------------------------------------- scaling


def worker_main(args: dict[str, Any]) -> None:
    """Child process: one worker of the group; holds its partitions paused until the go file appears."""
    from pipeline.settings import load_settings
    from pipeline.worker import build_live_runner

    settings = load_settings(**args["settings"])
    runner, close = build_live_runner(settings, idle_timeout_s=args["idle_s"])
    go, ready = Path(args["go"]), Path(args["ready"])
    consumer = runner.source
    state: dict[str, Any] = {"go": False, "t_first": 0.0, "t_last": 0.0, "records": 0, "steps": []}
    on_assign = runner.on_assign

    def gated_assign(parts: list[Any]) -> None:
        on_assign(parts)
        if not state["go"]:
            consumer.pause(parts)

    runner.on_assign = gated_assign
    poll, step = consumer.poll, runner.step

    def gated_poll(max_records: int, timeout_ms: int) -> list[Any]:
        if not state["go"]:
            give_up = time.monotonic() + 90
            while True:
                poll(max_records, 100)  # keeps the member in the group; paused partitions return nothing
                held = consumer.assignment()
                mine = [tp for tp in held if tp[0] == args["topic"]]
                if len(mine) == args["expect"] and not ready.exists():
                    ready.touch()
                if (go.exists() and len(mine) == args["expect"]) or time.monotonic() > give_up:
                    consumer.resume(held)
                    state["go"] = True
                    break
        records = poll(max_records, timeout_ms)
        if records and not state["t_first"]:
            state["t_first"] = time.time()
        return records

    def timed_step() -> int:
        k = step()
        if k:
            state["t_last"] = time.time()
            state["records"] += k
            state["steps"].append((state["t_last"], k))
        return k

    consumer.poll = gated_poll
    runner.step = timed_step
    try:
        runner.run()
    finally:
        close()
    Path(args["out"]).write_text(json.dumps({k: state[k] for k in ("t_first", "t_last", "records", "steps")}))


def scaling_run(env: Env, n: int, workers: int, max_records: int) -> dict[str, Any]:
    tag = f"scale{workers}-{uuid.uuid4().hex[:4]}"
    group = f"bench-{env.run}-{tag}"
    base = env.state_root / tag
    base.mkdir(parents=True, exist_ok=True)
    go = base / "go"
    procs, outs, readies = [], [], []
    for w in range(workers):
        settings = {"kafka": {"bootstrap_servers": env.bootstrap, "group_id": group, "client_id": f"bench-w{w}"},
                    "topics": {"transactions": env.topics["transactions"], "labels": env.topics["labels"]},
                    "redis": {"url": env.redis_url, "prefix": env.prefix(tag)},
                    "runner": {"domain": "transactions", "max_records": max_records, "state_dir": str(base / f"w{w}")}}
        out, ready = base / f"w{w}.json", base / f"w{w}.ready"
        args = {"settings": settings, "go": str(go), "ready": str(ready), "out": str(out), "idle_s": 4.0,
                "expect": PARTITIONS // workers, "topic": env.topics["transactions"]}
        log = (base / f"w{w}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.bench_pipeline", "--worker", json.dumps(args)],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        outs.append(out)
        readies.append(ready)
    deadline = time.time() + 120
    while not all(r.exists() for r in readies) and time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    t_go = time.time()
    go.touch()
    for p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    parts = [json.loads(o.read_text()) for o in outs if o.exists()]
    if len(parts) < workers:
        logs = [(base / f"w{w}.log").read_text()[-2000:] for w in range(workers)]
        print(f"scaling with {workers} worker(s) failed; worker logs:\n" + "\n".join(logs), flush=True)
        return {"workers": workers, "error": "a worker failed", "rate": float("nan")}
    # steady state: from the moment every worker finished its first batch (model built) to the last batch
    t0 = max(p["steps"][0][0] for p in parts if p["steps"])
    t1 = max(p["t_last"] for p in parts)
    steady = sum(k for p in parts for t, k in p["steps"] if t0 < t <= t1)
    return {"workers": workers, "records": sum(p["records"] for p in parts),
            "per_worker": [p["records"] for p in parts], "seconds": t1 - t0, "startup_s": t0 - t_go,
            "rate": steady / (t1 - t0) if t1 > t0 else float("nan")}


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help="max_records values (default 256..8192; quick: 512,4096)")
    parser.add_argument("--transactions", type=int, help="events in the transactions topic")
    parser.add_argument("--sensors", type=int, help="events in the sensors topic")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: sensors,peer,latency,scaling")
    parser.add_argument("--no-md", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--paced-producer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return {}
    if args.paced_producer:
        paced_producer(json.loads(args.paced_producer))
        return {}
    ensure_halfspace_trees()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else FULL_SIZES)
    n_tx = args.transactions or (50_000 if args.quick else 200_000)
    n_s = args.sensors or (15_000 if args.quick else 50_000)
    latency_s = 6.0 if args.quick else 12.0
    report = Report("pipeline", "Throughput and latency", "End-to-end: Kafka -> runner -> Redis")
    data: dict[str, Any] = {"sizes": sizes, "events": {"transactions": n_tx, "sensors": n_s}}
    domains = ["transactions"] + ([] if "sensors" in skip else ["sensors"])
    with environment({"transactions": PARTITIONS, "sensors": PARTITIONS, "labels": 1}) as env:
        print(f"broker {env.bootstrap}, redis {env.redis_url}, run {env.run}", flush=True)
        for domain, n in (("transactions", n_tx), ("sensors", n_s)):
            if domain in domains:
                took = produce(env, env.topics[domain], domain, simulated(domain, n))
                print(f"produced {n:,} {domain} in {took:.1f} s", flush=True)
        data["xadd_rate"] = raw_xadd(env, 20_000 if not args.quick else 10_000)
        print(f"raw XADD (pipelined 500): {data['xadd_rate']:,.0f}/s", flush=True)

        sweep: list[dict[str, Any]] = []
        for domain in domains:
            n = n_tx if domain == "transactions" else n_s
            for B in sizes:
                # the ceiling is the best of three reads (a single read swings with the machine's load)
                ceiling = max((raw_consume(env, env.topics[domain], n, B) for _ in range(3)), key=lambda c: c["rate"])
                row = pipeline_run(env, domain, n, B, f"{domain[:2]}{B}")
                row["ceiling"] = ceiling["rate"]
                row["ratio"] = row["rate"] / ceiling["rate"]
                sweep.append(row)
                print(f"  {domain:<12} B={B:>5}: pipeline {row['rate']:>8,.0f}/s  ceiling {ceiling['rate']:>9,.0f}/s "
                      f"({row['ratio']:.1%})  alerts {row['alerts']}", flush=True)
        data["sweep"] = sweep

        def best(domain: str) -> dict[str, Any]:
            return max((r for r in sweep if r["domain"] == domain), key=lambda r: r["rate"])

        tx_best = best("transactions")
        B_star = tx_best["batch"]
        if "peer" not in skip:
            n_peer = min(n_tx, 30_000 if args.quick else 100_000)
            ours = pipeline_run(env, "transactions", n_peer, B_star, "peer-ours")
            river = pipeline_run(env, "transactions", n_peer, B_star, "peer-river",
                                 model={"detector": "halfspace_trees"})
            data["peer"] = {"ours": ours, "river": river, "ratio": ours["rate"] / river["rate"]}
            print(f"  peer at B={B_star}: ours {ours['rate']:,.0f}/s, River HST {river['rate']:,.0f}/s "
                  f"-> {data['peer']['ratio']:.2f}x", flush=True)
        if "latency" not in skip:
            runs = [("default", 0.5, None)]
            if not args.quick:
                runs += [("commit_interval_s 0.1", 0.5, {"commit_interval_s": 0.1}), ("default", 0.25, None)]
            data["latency"] = []
            for label, share, overrides in runs:
                lat = latency_run(env, share * tx_best["rate"], latency_s, B_star, f"lat{len(data['latency'])}",
                                  overrides)
                lat["config"], lat["share_of_max"] = label, share
                data["latency"].append(lat)
                print(f"  latency ({label}, {share:.0%} of max) at {lat['achieved_rate']:,.0f}/s: to alert p50 {lat['alert_p50_ms']:.0f} ms "
                      f"p99 {lat['alert_p99_ms']:.0f} ms; to Redis p50 {lat['redis_p50_ms']:.0f} ms "
                      f"p99 {lat['redis_p99_ms']:.0f} ms ({lat['measured_alerts']} alerts)", flush=True)
        if "scaling" not in skip:
            one = scaling_run(env, n_tx, 1, B_star)
            two = scaling_run(env, n_tx, 2, B_star)
            data["scaling"] = {"one": one, "two": two, "speedup": two["rate"] / one["rate"]}
            print(f"  scaling: 1 worker {one['rate']:,.0f}/s, 2 workers {two['rate']:,.0f}/s "
                  f"-> {data['scaling']['speedup']:.2f}x", flush=True)
        data["loadavg_end"] = list(os.getloadavg())

    write_report(report, data)
    report.save(update_md=not args.no_md)
    return data


def write_report(report: Report, data: dict[str, Any]) -> None:
    sweep = data["sweep"]
    report.add(f"Events per topic: {data['events']['transactions']:,} transactions, {data['events']['sensors']:,} "
               f"sensor readings, {PARTITIONS} partitions. Load average at the end: "
               f"{data['loadavg_end'][0]:.1f} (the 2 cores are shared with other jobs; compare ratios, not absolutes).")
    report.table("Throughput by batch size (max_records)",
                 ["domain", "batch", "pipeline events/s", "raw consume events/s", "pipeline / ceiling", "alerts"],
                 [[r["domain"], r["batch"], r["rate"], r["ceiling"], f"{r['ratio']:.1%}", r["alerts"]] for r in sweep])
    report.add(f"Raw Redis ceiling: pipelined XADD (500 per round trip) {data['xadd_rate']:,.0f} alerts/s; the "
               "pipeline raises about 0.5 % of events as alerts, so Redis is far from the limit.")
    targets = []
    for domain in ("transactions", "sensors"):
        mine = [r for r in sweep if r["domain"] == domain]
        if not mine:
            continue
        b = max(mine, key=lambda r: r["rate"])
        ceiling = max(r["ceiling"] for r in mine)
        ratio = b["rate"] / ceiling
        targets.append([f"{domain} end-to-end vs raw consume ceiling (best vs best)", f">= {TARGETS[domain]:.0%}",
                        f"{ratio:.1%} ({b['rate']:,.0f} vs {ceiling:,.0f}/s, B={b['batch']})",
                        verdict(ratio >= TARGETS[domain])])
    if "peer" in data:
        p = data["peer"]
        targets.append(["transactions vs River Half-Space Trees pipeline", ">= 1.5x",
                        f"{p['ratio']:.2f}x ({p['ours']['rate']:,.0f} vs {p['river']['rate']:,.0f}/s, "
                        f"B={p['ours']['batch']})", verdict(p["ratio"] >= TARGETS["peer"])])
    for lat in data.get("latency", []):
        if lat["share_of_max"] != 0.5:
            continue
        targets.append([f"p99 event-to-alert at 50 % of max ({lat['config']}; achieved {lat['achieved_rate']:,.0f}/s)",
                        "<= 200 ms", f"to alert {lat['alert_p99_ms']:.0f} ms; to Redis {lat['redis_p99_ms']:.0f} ms",
                        f"alert {verdict(lat['alert_p99_ms'] <= TARGETS['p99_ms'])}, "
                        f"Redis {verdict(lat['redis_p99_ms'] <= TARGETS['p99_ms'])}"])
    if "scaling" in data:
        s = data["scaling"]
        targets.append(["2 workers vs 1 (one group, 6 partitions)", ">= 1.7x",
                        f"{s['speedup']:.2f}x ({s['two']['rate']:,.0f} vs {s['one']['rate']:,.0f}/s)",
                        verdict(s["speedup"] >= TARGETS["scaling"])])
    if "latency" in data:
        report.table("Event-to-alert latency (fresh events produced at a share of the best transactions rate)",
                     ["runner config", "share of max", "target rate/s", "achieved/s", "alerts measured", "to alert p50 ms",
                      "to alert p99 ms", "to Redis p50 ms", "to Redis p99 ms"],
                     [[lat["config"], f"{lat['share_of_max']:.0%}", lat["target_rate"], lat["achieved_rate"], lat["measured_alerts"],
                       lat["alert_p50_ms"], lat["alert_p99_ms"], lat["redis_p50_ms"], lat["redis_p99_ms"]]
                      for lat in data["latency"]])
    if "scaling" in data:
        s = data["scaling"]
        report.table("Scaling: worker processes in one consumer group",
                     ["workers", "records", "per worker", "seconds", "events/s"],
                     [[x["workers"], x.get("records"), ", ".join(map(str, x.get("per_worker", []))), x.get("seconds"),
                       x["rate"]] for x in (s["one"], s["two"])])
    report.table("Targets", ["what", "target", "measured", "verdict"], targets)
    report.data = data


if __name__ == "__main__":
    main()
