"""`streamwarden console`: the analysts' side. A web page (Starlette, served by uvicorn) with the live alert list,
each alert's details, the sensors' fault episodes and verdict buttons; verdicts become labels on the labels topic
exactly once (verdicts.py), from the page or from `streamwarden alerts label`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.console.history import AlertHistory
from pipeline.console.verdicts import VerdictStore
from pipeline.settings import Settings


@dataclass
class ConsoleServices:
    """The console's connections: the alert stream, the verdict store (Redis + the labels producer), metrics."""

    settings: Settings
    history: AlertHistory
    verdicts: VerdictStore
    metrics: Any
    close: Callable[[], None]


def open_console(settings: Settings) -> ConsoleServices:
    """Connect to Redis and Kafka; an unreachable one raises SinkUnavailable / BrokerUnavailable within the
    start-up timeouts (pipeline.cli.services_or_exit turns them into one line)."""
    from ingest.producer import EventProducer
    from pipeline.observability import ConsoleMetrics
    from sinks.connection import probe
    from sinks.subscriber import AlertSubscriber

    redis = settings.redis
    probe(redis.connection(), redis.startup_timeout_s)
    subscriber = AlertSubscriber(connection=redis.connection(), prefix=redis.prefix, stream=redis.stream,
                                 channel_prefix=redis.channel_prefix)
    security = settings.kafka.client_config()
    security.pop("bootstrap_servers")
    client_id = security.pop("client_id")
    try:
        producer = EventProducer(settings.kafka.bootstrap_servers, client_id=f"{client_id}-console", config=security)
    except BaseException:
        subscriber.close()
        raise
    metrics = ConsoleMetrics()
    verdicts = VerdictStore(subscriber.client, redis.prefix, producer, settings.topics.labels, metrics=metrics)

    def close() -> None:
        producer.close(timeout=5)
        subscriber.close()

    return ConsoleServices(settings, AlertHistory(subscriber), verdicts, metrics, close)
