"""Analyst verdicts: one label on the labels topic per alert, however often (or wherever) it is given.

A verdict is first claimed in Redis with SET NX (`<redis.prefix>verdict:<alert_id>`); only the claim that
succeeds produces the label, so a second click, a second console or `streamwarden alerts label` change
nothing. A label that Kafka does not take drops the claim again, so the verdict can be given once more.

>>> verdict_name("sensors", 1), verdict_name("transactions", 0)
('fault', 'genuine')
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from ingest.errors import ProduceFailed
from ingest.schemas import Label, encode_event, event_key
from sinks.alert import Alert
from sinks.connection import redis_call

# (label 0, label 1) in each domain's words
VERDICT_NAMES = {"transactions": ("genuine", "fraud"), "sensors": ("normal", "fault")}


def verdict_name(domain: str, label: int) -> str:
    return VERDICT_NAMES.get(domain, VERDICT_NAMES["transactions"])[label]


def can_label(alert: Alert) -> bool:
    """Whether the alert stands for one real event: not a storm summary (entity `*`) nor an episode's end."""
    return alert.entity != "*" and alert.episode in (None, "open")


@dataclass(frozen=True, slots=True)
class Verdict:
    alert_id: str
    event_id: str
    domain: str
    label: int
    ts: float  # when it was given (the label's ts)
    by: str  # "console" or "cli"

    @property
    def name(self) -> str:
        return verdict_name(self.domain, self.label)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Verdict:
        return cls(**json.loads(data))


@dataclass(frozen=True, slots=True)
class VerdictResult:
    verdict: Verdict  # the verdict that stands: this one when recorded, else the earlier one
    recorded: bool


class VerdictStore:
    """Record verdicts (Redis claim + one label on `labels_topic` through an ingest EventProducer) and read them."""

    def __init__(self, client: redis.Redis, prefix: str, producer: Any, labels_topic: str, *,
                 metrics: Any = None, timeout_s: float = 10.0) -> None:
        self.client, self.prefix, self.producer, self.labels_topic = client, prefix, producer, labels_topic
        self.metrics, self.timeout_s = metrics, timeout_s

    def key(self, alert_id: str) -> str:
        return f"{self.prefix}verdict:{alert_id}"

    def get_many(self, alert_ids: Iterable[str]) -> dict[str, Verdict]:
        ids = list(alert_ids)
        if not ids:
            return {}
        values = self._redis(self.client.mget, [self.key(i) for i in ids])
        return {i: Verdict.from_json(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def get(self, alert_id: str) -> Verdict | None:
        return self.get_many([alert_id]).get(alert_id)

    def record(self, alert: Alert, label: int, by: str = "console") -> VerdictResult:
        """Claim the verdict; when the claim is new, produce one label and wait for Kafka to take it."""
        if label not in (0, 1):
            raise ValueError(f"a verdict is label 0 or 1, got {label!r}")
        if not can_label(alert):
            raise ValueError(f"alert {alert.alert_id} ({alert.episode or 'summary'}) stands for no single event")
        verdict = Verdict(alert.alert_id, alert.event_id, alert.domain, label, time.time(), by)
        key = self.key(alert.alert_id)
        if not self._redis(self.client.set, key, verdict.to_json(), nx=True):
            earlier = self.get(alert.alert_id)
            return VerdictResult(earlier or verdict, recorded=False)
        event = Label(event_id=alert.event_id, label=1 if label == 1 else 0, ts=verdict.ts)
        try:
            future = self.producer.send(self.labels_topic, event_key("labels", event), encode_event(event))
            future.get(timeout=self.timeout_s)
        except Exception as exc:
            self._redis(self.client.delete, key)  # not labelled: the verdict may be given again
            raise ProduceFailed(f"the label for {alert.event_id} did not reach {self.labels_topic}: {exc}") from exc
        if self.metrics is not None:
            self.metrics.verdicts.labels(domain=alert.domain, verdict=verdict.name).inc()
        return VerdictResult(verdict, recorded=True)

    @staticmethod
    def _redis(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return redis_call("for verdicts", fn, *args, **kwargs)
