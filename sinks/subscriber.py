"""Reading alerts back: the durable Stream (plain or with a consumer group) and live pub/sub.

Stream ids are the Redis write times of the alerts (ms), so `since` positions by alert write time.

Usage::

    sub = AlertSubscriber("redis://127.0.0.1:6379/0")
    for item in sub.consume("fraud-team", "worker-1", domain="transactions"):
        handle(item.alert)  # acked when the loop asks for the next one
    with sub.subscribe("sensors") as live:  # pub/sub: only what is published from now on
        alert = live.get(timeout=1.0)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import redis

from sinks.alert import Alert
from sinks.connection import UNAVAILABLE_ERRORS, RedisConfig, redis_call, resolve_client
from sinks.errors import SinkError, SinkUnavailable

log = logging.getLogger(__name__)

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_SEQ = 18446744073709551615


def stream_start_id(
    since: str | float | datetime | None, default: str = "0", now: float | None = None
) -> str:
    """Turn `since` into an exclusive XREAD/XGROUP start id.

    Accepts a stream id ("0", "$", "1700000000000-0"), epoch seconds, a datetime, an ISO-8601 string,
    or a relative age ("30s", "10m", "2h", "1d"). Entries written at or after that time are read.

    >>> stream_start_id("$"), stream_start_id(None), stream_start_id(1.5)
    ('$', '0', '1499-18446744073709551615')
    >>> stream_start_id("10m", now=1000.0)
    '399999-18446744073709551615'
    """
    if since is None:
        return default
    if isinstance(since, str):
        text = since.strip()
        if text in ("$", "0", "0-0"):
            return text
        if "-" in text and _STREAM_ID.match(text):
            return text
        rel = _RELATIVE.match(text)
        if rel:
            ts = (time.time() if now is None else now) - float(rel.group(1)) * _UNIT_S[rel.group(2)]
        else:
            try:
                ts = float(text)
            except ValueError:
                try:
                    since = datetime.fromisoformat(text)
                except ValueError as exc:
                    raise ValueError(
                        f"cannot read --since {since!r}: use a stream id, epoch seconds, ISO time or 10m/2h/1d"
                    ) from exc
                ts = _datetime_ts(since)
    elif isinstance(since, datetime):
        ts = _datetime_ts(since)
    elif isinstance(since, timedelta):
        ts = (time.time() if now is None else now) - since.total_seconds()
    else:
        ts = float(since)
    ms = int(round(ts * 1000))
    return "0" if ms <= 0 else f"{ms - 1}-{_MAX_SEQ}"


def _datetime_ts(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class StreamAlert:
    """An alert read from the stream, with its stream entry id."""

    id: str
    alert: Alert

    @property
    def written_ts(self) -> float:
        """Redis write time (epoch seconds) taken from the entry id."""
        return int(self.id.split("-", 1)[0]) / 1000.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LiveSubscription:
    """Pub/sub subscription to one domain's channel (or all domains). Subscribed on creation.

    Iterate it, or call `get(timeout)`. Only alerts published while subscribed arrive (no history: use
    the stream for that). Close it, or use it as a context manager.
    """

    def __init__(self, client: redis.Redis, channel: str, pattern: bool) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.channel = channel
        self.pattern = pattern
        try:
            if pattern:
                self._pubsub.psubscribe(channel)
            else:
                self._pubsub.subscribe(channel)
            # wait for the confirmation so nothing published after this returns is missed
            deadline = time.monotonic() + 5.0
            while not self._pubsub.subscribed and time.monotonic() < deadline:
                self._pubsub.get_message(timeout=0.05)
            confirmed = self._pubsub.subscribed
        except UNAVAILABLE_ERRORS as exc:
            raise SinkUnavailable(f"cannot subscribe to {channel}: {exc}") from exc
        if not confirmed:
            raise SinkUnavailable(f"subscription to {channel} not confirmed")

    def get(self, timeout: float = 1.0) -> Alert | None:
        """The next alert, or None when none arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = self._pubsub.get_message(timeout=max(0.0, remaining))
            except UNAVAILABLE_ERRORS as exc:
                raise SinkUnavailable(f"pub/sub connection lost: {exc}") from exc
            if msg is not None and msg.get("type") in ("message", "pmessage"):
                try:
                    return Alert.from_json(msg["data"])
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("skipping undecodable alert on %s: %s", _text(msg["channel"]), exc)
            if remaining <= 0:
                return None

    def __iter__(self) -> Iterator[Alert]:
        while True:
            alert = self.get(timeout=1.0)
            if alert is not None:
                yield alert

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> LiveSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertSubscriber:
    """Read alerts from the stream (`read`, `iter_stream`), through a consumer group (`read_group`,
    `claim_idle`, `ack`, `consume`), or live from pub/sub (`subscribe`). `domain` filters everywhere.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        connection: RedisConfig | None = None,
        prefix: str = "streamwarden:",
        stream: str | None = None,
        channel_prefix: str | None = None,
    ) -> None:
        self._client, self._owns_client = resolve_client(url, connection, client)
        self.stream = stream if stream is not None else f"{prefix}alerts"
        self.channel_prefix = channel_prefix if channel_prefix is not None else f"{prefix}alerts:"
        self._history_pos: dict[tuple[str, str], str] = {}  # where each consumer's own-pending replay stands
        self._history_done: set[tuple[str, str]] = set()

    @property
    def client(self) -> redis.Redis:
        return self._client

    # ---- plain stream reads -------------------------------------------------------------------------
    def read(
        self, since: Any = "0", count: int = 100, block_ms: int | None = None, domain: str | None = None
    ) -> list[StreamAlert]:
        """Up to `count` entries after `since` (exclusive start id; see stream_start_id). No group, no ack."""
        start = stream_start_id(since)
        if start == "$" and not block_ms:
            return []
        resp = self._call(self._client.xread, {self.stream: start}, count=count, block=block_ms)
        return self._decode(self._entries(resp), domain)[0]

    def iter_stream(
        self,
        since: Any = "$",
        domain: str | None = None,
        follow: bool = True,
        block_ms: int = 1000,
        count: int = 100,
    ) -> Iterator[StreamAlert]:
        """Entries after `since`, in order; with follow=False it stops at the current end of the stream."""
        last = stream_start_id(since, default="$")
        if last == "$":
            if not follow:
                return
            last = self.latest_id()  # a concrete id, so nothing written between two reads is skipped
        while True:
            resp = self._call(
                self._client.xread, {self.stream: last}, count=count, block=block_ms if follow else None
            )
            entries = self._entries(resp)
            if not entries:
                if not follow:
                    return
                continue
            last = _text(entries[-1][0])
            yield from self._decode(entries, domain)[0]

    def latest_id(self) -> str:
        """Id of the newest entry ("0" for an empty stream): reading after it gives only new alerts."""
        newest = self._call(self._client.xrevrange, self.stream, count=1)
        return _text(newest[0][0]) if newest else "0"

    # ---- consumer groups ----------------------------------------------------------------------------
    def ensure_group(self, group: str, since: Any = "0") -> bool:
        """Create `group` (and the stream) if missing; True when created. `since` positions a new group."""
        try:
            self._call(
                self._client.xgroup_create, self.stream, group, id=stream_start_id(since), mkstream=True
            )
            return True
        except SinkError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise

    def read_group(
        self,
        group: str,
        consumer: str,
        count: int = 100,
        block_ms: int | None = None,
        domain: str | None = None,
    ) -> list[StreamAlert]:
        """Next entries for `consumer`: first its own unacked history (after a restart), then new ones.

        Entries of other domains and undecodable entries are acked and dropped from the result (logged).
        """
        key = (group, consumer)
        if key not in self._history_done:
            pos = self._history_pos.get(key, "0")
            resp = self._call(self._client.xreadgroup, group, consumer, {self.stream: pos}, count=count)
            entries = self._entries(resp)
            if entries:
                self._history_pos[key] = _text(entries[-1][0])
                return self._keep(
                    group, entries, domain
                )  # trimmed entries (no fields) get acked as undecodable
            self._history_done.add(key)
        resp = self._call(
            self._client.xreadgroup, group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return self._keep(group, self._entries(resp), domain)

    def claim_idle(
        self, group: str, consumer: str, min_idle_ms: int, count: int = 100, domain: str | None = None
    ) -> list[StreamAlert]:
        """Take over entries other consumers read but did not ack within `min_idle_ms` (XAUTOCLAIM)."""
        claimed: list[tuple[Any, Any]] = []
        start = "0-0"
        while len(claimed) < count:
            resp = self._call(
                self._client.xautoclaim,
                self.stream,
                group,
                consumer,
                min_idle_ms,
                start,
                count=count - len(claimed),
            )
            next_start, entries = _text(resp[0]), resp[1]
            claimed.extend(e for e in entries if e)
            if next_start == "0-0":
                break
            start = next_start
        return self._keep(group, claimed, domain)

    def ack(self, group: str, *ids: str) -> int:
        """XACK; returns how many were pending."""
        if not ids:
            return 0
        return int(self._call(self._client.xack, self.stream, group, *ids))

    def pending_count(self, group: str) -> int:
        """Entries delivered to the group and not yet acked."""
        info = self._call(self._client.xpending, self.stream, group)
        return int(info["pending"])

    def consume(
        self,
        group: str,
        consumer: str,
        *,
        domain: str | None = None,
        since: Any = "0",
        auto_ack: bool = True,
        follow: bool = True,
        block_ms: int = 1000,
        count: int = 100,
        min_idle_ms: int = 60_000,
        claim_every_s: float = 10.0,
    ) -> Iterator[StreamAlert]:
        """Iterate the group's alerts, claiming dead consumers' pending entries every `claim_every_s`.

        With auto_ack, an alert is acked when the caller asks for the next one (it has been handled);
        the last one before the caller stops stays pending and comes back on restart (at-least-once).
        Without auto_ack, call `ack(group, item.id)` yourself. follow=False stops when nothing is left.
        """
        self.ensure_group(group, since)
        self._history_done.discard((group, consumer))  # a new session first replays its own unacked entries
        self._history_pos.pop((group, consumer), None)
        last_claim = float("-inf")
        while True:
            batch: list[StreamAlert] = []
            if time.monotonic() - last_claim >= claim_every_s:
                batch = self.claim_idle(group, consumer, min_idle_ms, count, domain)
                last_claim = time.monotonic()
            if not batch:
                batch = self.read_group(group, consumer, count, block_ms if follow else None, domain)
            if not batch and not follow and (group, consumer) in self._history_done:
                return
            for item in batch:
                yield item
                if auto_ack:
                    self.ack(group, item.id)

    # ---- live ---------------------------------------------------------------------------------------
    def subscribe(self, domain: str | None = None) -> LiveSubscription:
        """Live alerts of `domain` (all domains when None), from now on."""
        if domain is None:
            return LiveSubscription(self._client, self.channel_prefix + "*", pattern=True)
        return LiveSubscription(self._client, self.channel_prefix + domain, pattern=False)

    # ---- helpers ------------------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return redis_call("while reading alerts", fn, *args, **kwargs)

    @staticmethod
    def _entries(resp: Any) -> list[tuple[Any, Any]]:
        if not resp:
            return []
        if isinstance(resp, dict):  # RESP3
            return [
                e
                for entries in resp.values()
                for e in (entries[0] if entries and isinstance(entries[0], list) else entries)
            ]
        return [e for _, entries in resp for e in entries]

    def _decode(
        self, entries: list[tuple[Any, Any]], domain: str | None
    ) -> tuple[list[StreamAlert], list[str]]:
        """(alerts matching `domain`, ids of entries skipped: other domain or undecodable)."""
        kept: list[StreamAlert] = []
        skipped: list[str] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            fields = fields or {}
            entry_domain = fields.get(b"domain", fields.get("domain"))
            if domain is not None and entry_domain is not None and _text(entry_domain) != domain:
                skipped.append(entry_id)
                continue
            payload = fields.get(b"alert", fields.get("alert"))
            try:
                alert = Alert.from_json(payload if payload is not None else b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("skipping undecodable alert entry %s in %s: %s", entry_id, self.stream, exc)
                skipped.append(entry_id)
                continue
            if domain is not None and alert.domain != domain:
                skipped.append(entry_id)
                continue
            kept.append(StreamAlert(entry_id, alert))
        return kept, skipped

    def _keep(self, group: str, entries: list[tuple[Any, Any]], domain: str | None) -> list[StreamAlert]:
        kept, skipped = self._decode(entries, domain)
        self.ack(group, *skipped)
        return kept

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> AlertSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
