"""`streamwarden demo`: the whole system on one machine in a few minutes.

Brings up local Kafka + Redis (pipeline.services), creates fresh topics, starts a worker thread
(the same wiring as `streamwarden run`), produces simulated transactions (with injected fraud:
card testing, amount spikes, compromised terminals, account takeovers), their delayed fraud
labels, sensor readings (with spikes, level shifts, stuck channels) and a few malformed records,
shows alerts and counters live, then prints a summary and writes a report.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from evaluation.score_log import ScoreLog
from pipeline.settings import Settings

SENSOR_INTERVAL_S = 10.0  # seconds between a device's readings


@dataclass(frozen=True)
class DemoOptions:
    transactions: int = 20_000  # about this many simulated transactions
    sensor_steps: int = 700  # readings per device
    devices: int = 3
    days: int = 14  # span of the simulated transactions (labels arrive 7 days late)
    report_dir: Path = Path("reports/demo")
    keep_services: bool = True
    idle_timeout_s: float = 6.0  # the worker stops this long after the last record
    seed: int = 0


def _demo_settings(settings: Settings, services: Any, stamp: str) -> Settings:
    """The user's settings pointed at the local services, fresh topics and group; the models as configured
    (the shipped defaults unless the user changed them)."""
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": services.kafka_bootstrap,
                                                   "group_id": f"demo-{stamp}", "session_timeout_ms": 10_000}),
        "redis": settings.redis.model_copy(update={"url": type(settings.redis.url)(services.redis_url)}),
        "topics": settings.topics.model_copy(update={"transactions": f"demo-{stamp}-transactions",
                                                     "sensors": f"demo-{stamp}-sensors",
                                                     "labels": f"demo-{stamp}-labels"}),
        "runner": settings.runner.model_copy(update={"domain": "all", "commit_interval_s": 0.5,
                                                     "state_dir": settings.runner.state_dir / f"demo-{stamp}"}),
    })


class _Feed:
    """Runner observer for the live view: recent alerts and per-domain counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recent: deque[tuple[str, str, str, float, float, str]] = deque(maxlen=10)
        self.log = ScoreLog()

    def __call__(self, domain: str, events: Any, records: Any, batch: Any) -> None:
        with self.lock:
            self.log(domain, events, records, batch)
            for i in np.flatnonzero(batch.flags).tolist():
                _, score, threshold = batch.verdict(i)
                self.recent.append((domain, events[i].event_id, batch.keys[i], score, threshold,
                                    batch.reasons.get(i, "")))


def _view(runner: Any, feed: _Feed, produced: dict[str, int], started: float) -> Group:
    stats = runner.stats
    elapsed = max(time.time() - started, 1e-9)
    counters = Table.grid(padding=(0, 3))
    counters.add_row(f"produced {sum(produced.values())}", f"scored {stats.events}", f"alerts {stats.alerts}",
                     f"rejects (DLQ) {stats.rejects}", f"labels {stats.labels}", f"commits {stats.commits}",
                     f"{stats.events / elapsed:.0f} events/s")
    state = "   ".join(f"{domain}: {'[yellow]warming up, no alerts yet[/]' if warming else '[green]alerts armed[/]'}"
                       for domain, warming in sorted(stats.warming_up.items()))
    alerts = Table("domain", "event", "entity", "score", "threshold", "why", title="latest alerts", expand=True)
    with feed.lock:
        for domain, event_id, entity, score, threshold, reason in reversed(feed.recent):
            alerts.add_row(domain, event_id, entity, f"{score:.3f}", f"{threshold:.3f}", reason)
    return Group(counters, state, alerts)


def demo_simulators(options: DemoOptions, stamp: str) -> tuple[Any, Any]:
    """The demo's transaction and sensor simulators (ids prefixed with `stamp`)."""
    from ingest.simulator import SensorSimulator, TransactionSimulator

    customers = max(20, options.transactions // (2 * options.days))
    return (TransactionSimulator(seed=options.seed, n_customers=customers, n_terminals=customers, days=options.days,
                                 id_prefix=f"tx{stamp}"),
            SensorSimulator(seed=options.seed, n_devices=options.devices, n_steps=options.sensor_steps,
                            interval_s=SENSOR_INTERVAL_S, id_prefix=f"sr{stamp}", spikes_per_1000=6.0,
                            level_shifts_per_1000=2.0))


def alert_quality(frame: pd.DataFrame, options: DemoOptions, episode_gap_rows: int) -> dict[str, Any]:
    """The summary's alert figures of scored demo events (`domain`, `alert`, `label` columns and the sensors'
    episode columns): precision and recall per domain, sensor faults with an alarm episode, false episodes."""
    from evaluation.episodes import episode_scores
    from evaluation.metrics import precision_recall

    out: dict[str, Any] = {}
    for domain, part in frame.groupby("domain"):
        precision, recall = precision_recall((part["label"] == 1).to_numpy(), part["alert"].astype(bool).to_numpy())
        out[f"{domain} precision"] = None if precision is None else round(precision, 3)
        out[f"{domain} recall"] = None if recall is None else round(recall, 3)
    sensors = frame[frame["domain"] == "sensors"]
    if len(sensors):
        episodes = episode_scores(sensors, episode_gap_rows)
        hours = options.devices * options.sensor_steps * SENSOR_INTERVAL_S / 3600
        out["sensors faults with an alarm episode"] = f"{episodes['faults_detected']} of {episodes['faults']}"
        out["sensors false episodes per device-hour"] = round(episodes["false_episodes"] / hours, 2)
    return out


def run_demo(settings: Settings, options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo end to end; returns the summary it prints."""
    from evaluation.report import write_report
    from ingest.consumer import create_topics
    from ingest.produce import produce_events, produce_in_time_order
    from ingest.producer import EventProducer
    from ingest.schemas import DLQ_SUFFIX
    from pipeline.services import LocalServices
    from pipeline.worker import build_live_runner

    console = console or Console()
    console.rule("streamwarden demo")
    services = LocalServices.from_env()
    console.print("starting local Kafka and Redis (first run downloads Kafka)...")
    started_services = services.ensure_up(verbose=True)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    settings = _demo_settings(settings, services, stamp)
    t = settings.topics
    topics = {t.transactions: 2, t.sensors: 1, t.labels: 1}
    create_topics(services.kafka_bootstrap, {**topics, **{name + DLQ_SUFFIX: 1 for name in topics}})

    tx_sim, sensor_sim = demo_simulators(options, stamp)
    tx_events, sensor_events = list(tx_sim.events()), list(sensor_sim.events())

    feed = _Feed()
    runner, close = build_live_runner(settings, idle_timeout_s=options.idle_timeout_s)
    runner.observers.append(feed)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["stats"] = runner.run()
        except BaseException as exc:  # surfaced in the main thread below
            outcome["error"] = exc
        finally:
            close()

    produced = {"transactions": 0, "sensors": 0, "labels": 0, "malformed": 0}
    worker = threading.Thread(target=work, name="streamwarden-demo-worker", daemon=True)
    started = time.time()
    worker.start()

    def send() -> None:
        with EventProducer(services.kafka_bootstrap, client_id="streamwarden-demo") as producer:
            # chargebacks reach the worker among the transactions of their reveal time, as they would live
            sent = produce_in_time_order([(t.transactions, "transactions", tx_events),
                                          (t.labels, "labels", tx_sim.labels())], producer)
            produced["transactions"], produced["labels"] = sent[t.transactions], sent[t.labels]
            produced["sensors"] = produce_events(sensor_events, producer, t.sensors, "sensors", progress=False).sent
            for bad in (b"{not json", b'{"v":1,"event_id":"x","ts":"yesterday"}', b'{"v":9}'):
                producer.send(t.transactions, None, bad)
                produced["malformed"] += 1
            producer.flush()

    sender = threading.Thread(target=send, name="streamwarden-demo-producer", daemon=True)
    sender.start()
    try:
        with Live(_view(runner, feed, produced, started), console=console, refresh_per_second=4) as live:
            while worker.is_alive():
                worker.join(0.25)
                live.update(_view(runner, feed, produced, started))
    except KeyboardInterrupt:
        runner.request_stop()
        worker.join()
    sender.join()
    if "error" in outcome:
        raise outcome["error"]
    stats = outcome["stats"]

    frame = feed.log.frame({p.domain: p.detector_name for p in runner.processors.values()})
    truth = pd.concat([
        pd.Series(tx_sim.is_fraud.astype(int), index=tx_sim.to_frame()["event_id"]),
        pd.Series(sensor_sim.is_anomaly.astype(int), index=sensor_sim.to_frame()["event_id"]),
    ])
    frame["label"] = frame["event_id"].map(truth).astype(float)
    elapsed = (stats.stopped_at or time.time()) - stats.started_at - options.idle_timeout_s
    summary: dict[str, Any] = {"events": stats.events, "alerts": stats.alerts, "rejects": stats.rejects,
                               "labels": stats.labels, "throughput (events/s)": round(stats.events / max(elapsed, 1e-9), 1)}
    summary.update(alert_quality(frame, options, settings.sensors.episode_gap_rows))
    latency = runner.metrics.batch_latency.collect()[0].samples
    count = next(s.value for s in latency if s.name.endswith("_count"))
    total = next(s.value for s in latency if s.name.endswith("_sum"))
    summary["mean batch latency (ms)"] = round(1000 * total / count, 1) if count else None
    index = write_report(frame, options.report_dir, title="streamwarden demo", summary=summary)
    summary["report"] = str(index)

    table = Table("", "", title="demo summary")
    for key, value in summary.items():
        table.add_row(key, "–" if value is None else str(value))
    console.print(table)
    console.print(f"alerts are in Redis: [bold]streamwarden alerts tail --no-follow[/] ; report: {index}")
    if started_services and not options.keep_services:
        services.down(verbose=True)
    return summary
