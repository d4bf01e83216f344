"""Prometheus metrics for the runner, served over HTTP, and structured (JSON) logs.

Each `RunnerMetrics` owns its registry, so several runners (tests, backtests) never clash.

>>> m = RunnerMetrics()
>>> m.events_in.labels(domain="transactions").inc(3)
>>> b"streamwarden_events_total" in m.exposition()
True
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RunnerMetrics:
    """The counters, gauges and histograms a worker exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("streamwarden_events", "Events decoded and scored", ["domain"], registry=r)
        self.rejects = Counter("streamwarden_rejects", "Records sent to the dead-letter topic", ["domain", "reason"], registry=r)
        self.alerts = Counter("streamwarden_alerts", "Alerts raised by the champion detector", ["domain"], registry=r)
        self.held_back = Counter("streamwarden_alerts_over_budget", "Alerts held back by the per-minute budget",
                                 ["domain"], registry=r)
        self.suppressed = Counter(
            "streamwarden_suppressed_alerts", "Flagged events not raised (warm-up or alarm filter)", ["domain"], registry=r
        )
        self.labels_in = Counter("streamwarden_labels", "Delayed labels received", registry=r)
        self.consumer_lag = Gauge("streamwarden_consumer_lag", "Records behind the log end", ["topic", "partition"], registry=r)
        self.batch_latency = Histogram(
            "streamwarden_batch_seconds", "Wall time to process one polled batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.event_to_alert = Histogram(
            "streamwarden_event_to_alert_seconds",
            "Event time to alert time",
            ["domain"],
            buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 300.0),
            registry=r,
        )
        self.model_loss = Gauge("streamwarden_model_loss", "Last training loss", ["domain", "detector"], registry=r)
        self.drift_events = Counter("streamwarden_drift_events", "Drift detections", ["domain"], registry=r)
        self.warming_up = Gauge("streamwarden_warming_up",
                                "1 while the domain's newest event was scored without an armed threshold (no alerts)",
                                ["domain"], registry=r)
        self.sink_retries = Counter("streamwarden_sink_retries", "Flushes retried under backpressure", registry=r)
        self.poll_retries = Counter("streamwarden_poll_retries", "Polls that failed on a retriable broker error",
                                    registry=r)
        self.dead_letters_dropped = Gauge(
            "streamwarden_dead_letters_undeliverable",
            "Dead letters the broker refused for good: logged once and skipped (the original stays in its topic)",
            registry=r)
        self.commits = Counter("streamwarden_commits", "Offset commits", registry=r)
        self.checkpoints = Counter("streamwarden_checkpoints", "Checkpoints written", registry=r)
        self.device = Gauge("streamwarden_device_info", "Torch device in use (value 1)", ["device"], registry=r)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0 = any free port) from a daemon thread; returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)


class ConsoleMetrics:
    """What `streamwarden console` exports: the analysts' verdicts (each one a label on the labels topic)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.verdicts = Counter("streamwarden_verdicts", "Analyst verdicts recorded (one label produced each)",
                                ["domain", "verdict"], registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any `extra={...}` fields."""

    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._standard:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


# Our loggers log at the configured level; every other library's (kafka, urllib3, redis, torch...) at WARNING
# or above, unless the level is DEBUG.
OWN_LOGGERS = ("streamwarden", "pipeline", "ingest", "sinks", "stream_models", "evaluation", "bench")


def _not_topic_auto_create(record: logging.LogRecord) -> bool:
    # kafka-python logs this at ERROR while a topic it asked for is auto-created (or not created yet).
    return record.msg != "Topic %s not found in cluster metadata"


class RepeatLimit(logging.Filter):
    """Other libraries' repeats: each (logger, message template) passes once per `interval_s`. kafka-python logs
    every failed reconnect of an outage at ERROR; our own loggers already log one line per state change."""

    def __init__(self, interval_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OWN_LOGGERS:
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        self._last[key] = now
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route logs to stderr: our packages' (OWN_LOGGERS) at `level`, other libraries' at WARNING or above;
    `level` DEBUG turns every logger to DEBUG, kafka-python's topic auto-create "error" included."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    number = logging.getLevelNamesMapping()[level.upper()]
    if number > logging.DEBUG:
        handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(number if number <= logging.DEBUG else max(number, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(number)
    kafka_cluster = logging.getLogger("kafka.cluster")
    if number <= logging.DEBUG:
        kafka_cluster.removeFilter(_not_topic_auto_create)
    else:
        kafka_cluster.addFilter(_not_topic_auto_create)
    logging.Formatter.converter = time.gmtime
