"""The alert record written to Redis, and its deterministic id."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()


class Alert(msgspec.Struct, frozen=True, omit_defaults=True):
    """One alert: an event whose score crossed its detector's threshold.

    `event_ts` is the event time and `alert_ts` the wall-clock time the alert was made (epoch seconds, UTC).
    `top_features` holds (feature name, contribution) pairs, largest first.
    `score` and `threshold` are those of the detector that raised it (the champion, or the card profile,
    whose score is -log10 of a tail probability).

    >>> a = Alert("id1", "e1", "card-7", "transactions", 0.9, 0.5, "ae-1", 10.0, 11.0, [("amount", 3.5)])
    >>> Alert.from_json(a.to_json()) == a
    True
    """

    alert_id: str
    event_id: str
    entity: str
    domain: str
    score: float
    threshold: float
    model_version: str
    event_ts: float
    alert_ts: float
    top_features: list[tuple[str, float]] = msgspec.field(default_factory=list)
    label: int | None = None
    links: dict[str, str] | None = None
    reason: str | None = None  # a rule's alert says why in words (the card profile: amount, terminal, pace)
    warming_up: bool = False  # the models were still warming up: only rules could alert
    # sensors alert per episode: "open" (its first alarm), then "close" or "regime change" with its span
    episode: str | None = None
    episode_start_ts: float | None = None
    episode_rows: int | None = None

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON."""
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        """Decode and validate JSON made by `to_json`; raises msgspec.ValidationError/DecodeError."""
        return _DECODER.decode(data)

    def to_dict(self) -> dict[str, object]:
        """Plain builtins (lists for pairs), as the JSON holds them."""
        return msgspec.to_builtins(self)


_DECODER = msgspec.json.Decoder(Alert)


def check_alert(alert: Alert) -> None:
    """Raise ValueError for alerts a sink cannot order (NaN/inf score or event time)."""
    if not (math.isfinite(alert.score) and math.isfinite(alert.event_ts)):
        raise ValueError(f"alert {alert.alert_id}: score and event_ts must be finite")


def make_alert_id(event_id: str, detector: str, model_version: str) -> str:
    """Deterministic alert id: a redelivered event scored by the same model gets the same id.

    >>> make_alert_id("e1", "autoencoder", "v3") == make_alert_id("e1", "autoencoder", "v3")
    True
    >>> len(make_alert_id("e1", "autoencoder", "v3"))
    32
    """
    h = hashlib.blake2b(digest_size=16)
    for part in (event_id, detector, model_version):
        raw = part.encode("utf-8")
        h.update(len(raw).to_bytes(4, "big"))  # length-prefixed, so ("ab","c") != ("a","bc")
        h.update(raw)
    return h.hexdigest()


def new_alert(
    *,
    event_id: str,
    entity: str,
    domain: str,
    score: float,
    threshold: float,
    detector: str,
    model_version: str,
    event_ts: float,
    top_features: list[tuple[str, float]] | None = None,
    alert_ts: float | None = None,
    label: int | None = None,
    links: dict[str, str] | None = None,
) -> Alert:
    """Build an Alert with its deterministic id; `alert_ts` defaults to now."""
    return Alert(
        alert_id=make_alert_id(event_id, detector, model_version),
        event_id=event_id,
        entity=entity,
        domain=domain,
        score=float(score),
        threshold=float(threshold),
        model_version=model_version,
        event_ts=float(event_ts),
        alert_ts=time.time() if alert_ts is None else float(alert_ts),
        top_features=[(str(n), float(v)) for n, v in (top_features or [])],
        label=label,
        links=links,
    )


def over_budget_alert(domain: str, event_ts: float, budget: int, model_version: str, alert_ts: float) -> Alert:
    """The one alert that says a domain raised more than `budget` alerts in the event-time minute of `event_ts`
    (entity "*"): the rest of that minute's alerts are held back and counted in streamwarden_alerts_over_budget.

    >>> over_budget_alert("sensors", 125.0, 60, "v1", 130.0).event_id
    'over-budget:sensors:120'
    """
    start = int(event_ts // 60) * 60
    event_id = f"over-budget:{domain}:{start}"
    return Alert(alert_id=make_alert_id(event_id, "alert_budget", model_version), event_id=event_id, entity="*",
                 domain=domain, score=float(budget + 1), threshold=float(budget), model_version=model_version,
                 event_ts=float(start), alert_ts=alert_ts,
                 reason=f"more than {budget} alerts in this minute: the rest of it are held back "
                        "(counted in streamwarden_alerts_over_budget)")


def episode_end_alert(domain: str, entity: str, kind: str, episode: Any, model_version: str, alert_ts: float) -> Alert:
    """The alert that ends a device's alarm episode (`kind` "close" or "regime change"): its span, rows and peak.
    `episode` has opened_by, start_ts, end_ts, peak, rows and threshold (stream_models.engine.Episode).

    >>> from types import SimpleNamespace as E
    >>> a = episode_end_alert("sensors", "pump-1", "close", E(opened_by="r9", start_ts=0.0, end_ts=600.0, peak=4.2,
    ...                       rows=61, threshold=1.0), "v1", 601.0)
    >>> a.episode, a.episode_rows, a.reason
    ('close', 61, 'fault episode over: 61 readings, peak score 4.2')
    """
    what = ("fault episode over" if kind == "close"
            else "regime change: alarmed so long that this is the new normal; the device re-learns it")
    event_id = f"{episode.opened_by}:{kind.replace(' ', '-')}"
    return Alert(alert_id=make_alert_id(event_id, "episode", model_version), event_id=event_id, entity=entity,
                 domain=domain, score=float(episode.peak), threshold=float(episode.threshold), model_version=model_version,
                 event_ts=float(episode.end_ts), alert_ts=alert_ts, episode=kind, episode_start_ts=float(episode.start_ts),
                 episode_rows=int(episode.rows), reason=f"{what}: {episode.rows} readings, peak score {episode.peak:.3g}")
