"""What the console reads: the alert stream (newest first, or after a stream id), an entity's recent events from
the tail of its Kafka partition, and the sensors' fault episodes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sinks.alert import Alert
from sinks.connection import redis_call
from sinks.subscriber import AlertSubscriber, StreamAlert

CHUNK = 500
STREAM_ID = re.compile(r"^\d+(-\d+)?$")


class AlertHistory:
    """The alert stream through sinks.AlertSubscriber. A list reads at most `scan_limit` entries, newest first;
    `find` looks at `find_limit` entries unless it is told the alert's stream entry id."""

    def __init__(self, subscriber: AlertSubscriber, scan_limit: int = 20_000, find_limit: int = 100_000) -> None:
        self.subscriber, self.scan_limit, self.find_limit = subscriber, scan_limit, find_limit

    def latest_id(self) -> str:
        return self.subscriber.latest_id()

    def after(self, last_id: str, block_ms: int = 1000, count: int = 100) -> list[StreamAlert]:
        """Alerts written after stream id `last_id`, waiting up to `block_ms` for the first one."""
        return self.subscriber.read(since=last_id, count=count, block_ms=block_ms)

    def newest(self, count: int, keep: Callable[[Alert], bool] | None = None, top: str = "+",
               alert_id: str | None = None, limit: int | None = None) -> list[StreamAlert]:
        """Up to `count` alerts at or before stream id `top`, newest first, that `keep` accepts (and whose
        alert_id is `alert_id`, checked before decoding), among at most `limit` entries (`scan_limit`)."""
        client, stream = self.subscriber.client, self.subscriber.stream
        limit = self.scan_limit if limit is None else limit
        found: list[StreamAlert] = []
        scanned = 0
        while len(found) < count and scanned < limit:
            want = min(CHUNK, limit - scanned)
            entries = _call(client.xrevrange, stream, max=top, min="-", count=want)
            for raw_id, fields in entries:
                if alert_id is not None and _text(fields.get(b"alert_id", b"")) != alert_id:
                    continue
                try:
                    alert = Alert.from_json(fields.get(b"alert", b""))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if keep is None or keep(alert):
                    found.append(StreamAlert(_text(raw_id), alert))
                    if len(found) == count:
                        break
            if len(entries) < want:
                break
            scanned += len(entries)
            top = "(" + _text(entries[-1][0])
        return found

    def find(self, alert_id: str, at: str | None = None) -> StreamAlert | None:
        """The alert `alert_id`: at stream entry `at` when given (the pages' links carry it), else the newest
        such entry among the last `find_limit`."""
        if at and STREAM_ID.match(at):
            hits = self.newest(1, top=at, alert_id=alert_id, limit=1)
            if hits and hits[0].id == at:
                return hits[0]
        hits = self.newest(1, alert_id=alert_id, limit=self.find_limit)
        return hits[0] if hits else None


def matches(alert: Alert, domain: str | None = None, entity: str | None = None) -> bool:
    """The list's filters: exact domain, entity containing the text (any case)."""
    return (not domain or alert.domain == domain) and (not entity or entity.casefold() in alert.entity.casefold())


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return redis_call("while reading alerts", fn, *args, **kwargs)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------- Kafka events
@dataclass(frozen=True, slots=True)
class KafkaEvent:
    partition: int
    offset: int
    event_id: str
    ts: float | None
    fields: dict[str, Any]  # the rest of the event (v, event_id and ts left out)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record lands in with the Java client's and kafka-python's default partitioner
    (murmur2); the project's producers use it.

    >>> partition_for(b"card-1", 1)
    0
    """
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def recent_events(client_config: dict[str, Any], topic: str, key: str, *, tail: int = 1_000, limit: int = 20,
                  timeout_s: float = 5.0) -> list[KafkaEvent]:
    """The last `limit` events keyed `key` among the last `tail` records of the partition the key maps to
    (no consumer group, nothing committed), oldest first."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from ingest.errors import kafka_bootstrap

    config = {**client_config, "group_id": None, "enable_auto_commit": False, "allow_auto_create_topics": False,
              "client_id": "streamwarden-console",
              "bootstrap_timeout_ms": min(client_config.get("bootstrap_timeout_ms", 3_000), 3_000)}
    with kafka_bootstrap(config["bootstrap_servers"], config.get("bootstrap_timeout_ms", 30_000)):
        consumer = KafkaConsumer(**config)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return []
        tp = TopicPartition(topic, partitions[partition_for(key.encode(), len(partitions))])
        consumer.assign([tp])
        begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
        consumer.seek(tp, max(begin, end - tail))
        found: list[KafkaEvent] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for message in consumer.poll(timeout_ms=200).get(tp, []):
                if message.offset < end and message.key == key.encode():
                    found.append(_event(message))
        return found[-limit:]
    finally:
        consumer.close()


def _event(message: Any) -> KafkaEvent:
    try:
        data = json.loads(message.value)
    except (ValueError, TypeError):
        data = {"raw": message.value.decode("utf-8", "replace")[:200]}
    if not isinstance(data, dict):
        data = {"raw": str(data)[:200]}
    ts = data.pop("ts", None)
    event_id = str(data.pop("event_id", ""))
    data.pop("v", None)
    return KafkaEvent(message.partition, message.offset, event_id, ts if isinstance(ts, int | float) else None, data)


# ---------------------------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    """A device's fault episode: opened by an `open` alert, ended by a `close` or `regime change` alert."""

    entity: str
    opened: Alert | None = None
    ended: Alert | None = None
    alerts: list[Alert] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.ended is None:
            return "open"
        return "closed" if self.ended.episode == "close" else str(self.ended.episode)

    @property
    def start_ts(self) -> float:
        if self.ended is not None and self.ended.episode_start_ts is not None:
            return self.ended.episode_start_ts
        return (self.opened or self.ended).event_ts  # type: ignore[union-attr]

    @property
    def end_ts(self) -> float | None:
        return self.ended.event_ts if self.ended is not None else None

    @property
    def peak(self) -> float:
        return max(a.score for a in self.alerts)


def episodes(alerts: list[Alert]) -> dict[str, list[Episode]]:
    """Per device, its episodes newest first. An end alert's event id is `<opening event id>:<kind>`, which
    pairs it with its `open` alert.

    >>> from sinks.alert import Alert
    >>> a = [Alert("1", "r9", "pump", "sensors", 4.0, 1.0, "v1", 9.0, 9.5, episode="open"),
    ...      Alert("2", "r9:close", "pump", "sensors", 5.0, 1.0, "v1", 60.0, 61.0, episode="close",
    ...            episode_start_ts=9.0, episode_rows=30)]
    >>> [(e.state, e.start_ts, e.end_ts, e.peak) for e in episodes(a)["pump"]]
    [('closed', 9.0, 60.0, 5.0)]
    """
    by_opening: dict[tuple[str, str], Episode] = {}
    for alert in sorted(alerts, key=lambda a: a.event_ts):
        if not alert.episode:
            continue
        opening = alert.event_id if alert.episode == "open" else alert.event_id.rsplit(":", 1)[0]
        episode = by_opening.setdefault((alert.entity, opening), Episode(alert.entity))
        episode.alerts.append(alert)
        if alert.episode == "open":
            episode.opened = alert
        else:
            episode.ended = alert
    out: dict[str, list[Episode]] = {}
    for episode in sorted(by_opening.values(), key=lambda e: e.start_ts, reverse=True):
        out.setdefault(episode.entity, []).append(episode)
    return dict(sorted(out.items()))
