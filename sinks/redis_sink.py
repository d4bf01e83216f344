"""Alerts to Redis: a durable Stream for consumer groups plus a pub/sub channel per domain.

Each flushed batch runs one Lua script, so for every alert the dedup check, the suppression decision,
XADD, PUBLISH and the state updates happen atomically. Dedup keys record every decision (written or
suppressed), so a retried or replayed batch neither duplicates nor re-decides an alert.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import redis

from sinks.alert import Alert, check_alert
from sinks.connection import UNAVAILABLE_ERRORS, RedisConfig, resolve_client
from sinks.errors import SinkError, SinkUnavailable
from sinks.retry import RetryPolicy
from sinks.suppression import SuppressionConfig

log = logging.getLogger(__name__)

DEDUP_DUPLICATE, DEDUP_WRITTEN, DEDUP_SUPPRESSED = 0, 1, 2

# KEYS[1] = stream; for alert i (1-based): KEYS[2i] = dedup key, KEYS[2i+1] = suppression key.
# ARGV[1..5] = maxlen (0 = no trim), dedup ttl s, state ttl s, window s, score factor;
# then 5 per alert: alert_id, domain, channel, score, event_ts, payload (6 values).
# The suppression test mirrors sinks.suppression.should_emit exactly (same doubles, same comparisons).
_FLUSH_LUA = """
local stream = KEYS[1]
local maxlen = ARGV[1]
local dedup_ttl = tonumber(ARGV[2])
local state_ttl = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local factor = tonumber(ARGV[5])
local n = (#KEYS - 1) / 2
local out = {}
for i = 1, n do
  local dkey = KEYS[2 * i]
  local skey = KEYS[2 * i + 1]
  local a = 5 + (i - 1) * 6
  local alert_id, domain, channel = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local score_s, ts_s, payload = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  if redis.call('EXISTS', dkey) == 1 then
    out[i] = 0
  else
    local emit = true
    if window > 0 then
      local last = redis.call('HMGET', skey, 'score', 'ts')
      if last[1] and last[2] then
        local ls, lt = tonumber(last[1]), tonumber(last[2])
        local score, ts = tonumber(score_s), tonumber(ts_s)
        local dt = ts - lt
        local escalated = (score >= ls * factor) and (score > ls)
        if (not escalated) and (-window < dt) and (dt < window) then
          emit = false
        end
      end
    end
    if emit then
      if maxlen == '0' then
        redis.call('XADD', stream, '*', 'alert_id', alert_id, 'domain', domain, 'alert', payload)
      else
        redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'alert_id', alert_id, 'domain', domain, 'alert', payload)
      end
      redis.call('PUBLISH', channel, payload)
      if window > 0 then
        redis.call('HSET', skey, 'score', score_s, 'ts', ts_s)
        redis.call('EXPIRE', skey, state_ttl)
      end
      redis.call('SET', dkey, '1', 'EX', dedup_ttl)
      out[i] = 1
    else
      redis.call('SET', dkey, '2', 'EX', dedup_ttl)
      out[i] = 2
    end
  end
end
return out
"""


@dataclass(frozen=True)
class RedisSinkConfig:
    """Key layout and delivery rules. Every key starts with `prefix` unless `stream`/`channel_prefix` are given."""

    prefix: str = "streamwarden:"
    stream: str | None = None  # default: <prefix>alerts
    channel_prefix: str | None = None  # default: <prefix>alerts:  (channel = channel_prefix + domain)
    maxlen: int = 1_000_000  # approximate stream cap (MAXLEN ~); 0 = unbounded
    dedup_ttl_s: int = 7 * 86_400
    state_ttl_s: int | None = None  # suppression marks' TTL; default dedup_ttl_s
    suppression_s: float = 0.0  # per-entity quiet window in event time; 0 = off
    suppression_factor: float = 1.5  # a score >= factor x the last alerted one breaks the window
    batch_size: int = 500  # alerts per atomic script call

    def __post_init__(self) -> None:
        if self.maxlen < 0:
            raise ValueError("maxlen must be >= 0 (0 = unbounded)")
        if self.dedup_ttl_s < 1 or (self.state_ttl_s is not None and self.state_ttl_s < 1):
            raise ValueError("TTLs must be >= 1 s")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        SuppressionConfig(self.suppression_s, self.suppression_factor)  # validates window and factor

    @property
    def stream_key(self) -> str:
        return self.stream if self.stream is not None else f"{self.prefix}alerts"

    @property
    def channel_base(self) -> str:
        return self.channel_prefix if self.channel_prefix is not None else f"{self.prefix}alerts:"

    @property
    def suppression(self) -> SuppressionConfig:
        return SuppressionConfig(window_s=self.suppression_s, score_factor=self.suppression_factor)

    def channel(self, domain: str) -> str:
        return self.channel_base + domain

    def dedup_key(self, alert_id: str) -> str:
        return f"{self.prefix}dedup:{alert_id}"

    def suppression_key(self, domain: str, entity: str) -> str:
        return f"{self.prefix}supp:{domain}:{entity}"


class RedisAlertSink:
    """Buffered, idempotent alert writer. `add()` buffers; `flush()` delivers or raises with the buffer kept.

    add() and flush() may come from different threads: a lock guards the buffer (add waits for a flush).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        connection: RedisConfig | None = None,
        config: RedisSinkConfig | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **overrides: Any,
    ) -> None:
        """`overrides` are RedisSinkConfig fields (e.g. prefix=..., suppression_s=60); unknown names raise TypeError."""
        self.config = replace(config or RedisSinkConfig(), **overrides)
        self._client, self._owns_client = resolve_client(url, connection, client)
        self.retry_policy = retry_policy or RetryPolicy()
        self._sleep = sleep
        self._script = self._client.register_script(_FLUSH_LUA)
        self._buffer: list[Alert] = []
        self._lock = threading.Lock()
        self._stats = {"written": 0, "duplicates": 0, "suppressed": 0, "flushes": 0, "flush_errors": 0}

    @property
    def client(self) -> redis.Redis:
        return self._client

    def __repr__(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        return f"RedisAlertSink({where}, stream={self.config.stream_key!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        """Alerts buffered and not yet delivered."""
        return len(self._buffer)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: written, duplicates, suppressed, flushes, flush_errors, pending.

        `duplicates` counts alerts already decided earlier: redeliveries, replays, and the repeat of a batch
        whose reply was lost (its alerts count here rather than in `written`).
        """
        return {**self._stats, "pending": len(self._buffer)}

    def add(self, alerts: Iterable[Alert]) -> None:
        batch = list(alerts)
        for alert in batch:
            check_alert(alert)
        with self._lock:
            self._buffer.extend(batch)

    def flush(self) -> int:
        """Deliver everything buffered, in batches of `batch_size`; return how many alerts were written.

        Raises SinkUnavailable (retriable) on an outage and SinkError on other Redis failures; batches that
        did not complete stay buffered, so a later flush delivers them (dedup keys absorb any repeat).
        """
        written = 0
        with self._lock:
            while self._buffer:
                chunk = self._buffer[: self.config.batch_size]
                decisions = self._write(chunk)
                del self._buffer[: len(chunk)]
                written += decisions.count(DEDUP_WRITTEN)
                self._stats["written"] += decisions.count(DEDUP_WRITTEN)
                self._stats["duplicates"] += decisions.count(DEDUP_DUPLICATE)
                self._stats["suppressed"] += decisions.count(DEDUP_SUPPRESSED)
            self._stats["flushes"] += 1
        return written

    def flush_with_retry(self, policy: RetryPolicy | None = None) -> int:
        """flush(), retried with exponential backoff on SinkUnavailable; the last error propagates."""

        def on_retry(attempt: int, exc: Exception) -> None:
            log.warning(
                "alert flush attempt %d failed (%s); %d alerts kept, retrying", attempt, exc, self.pending
            )

        return (policy or self.retry_policy).call(self.flush, self._sleep, on_retry)

    def _write(self, chunk: list[Alert]) -> list[int]:
        cfg = self.config
        keys: list[str] = [cfg.stream_key]
        state_ttl = cfg.state_ttl_s if cfg.state_ttl_s is not None else cfg.dedup_ttl_s
        args: list[str | bytes | int] = [
            cfg.maxlen,
            cfg.dedup_ttl_s,
            state_ttl,
            repr(float(cfg.suppression_s)),
            repr(float(cfg.suppression_factor)),
        ]
        for alert in chunk:
            keys.append(cfg.dedup_key(alert.alert_id))
            keys.append(cfg.suppression_key(alert.domain, alert.entity))
            # repr() of a float round-trips exactly, so Lua compares the very same doubles as Python
            args.extend(
                (
                    alert.alert_id,
                    alert.domain,
                    cfg.channel(alert.domain),
                    repr(float(alert.score)),
                    repr(float(alert.event_ts)),
                    alert.to_json(),
                )
            )
        try:
            result = self._script(keys=keys, args=args, client=self._client)
        except redis.AuthenticationError as exc:  # a ConnectionError subclass, but retrying cannot help
            self._stats["flush_errors"] += 1
            raise SinkError(f"Redis refused the credentials in the sink's URL/settings: {exc}") from exc
        except UNAVAILABLE_ERRORS as exc:
            self._stats["flush_errors"] += 1
            raise SinkUnavailable(
                f"Redis unavailable during alert flush ({len(self._buffer)} kept): {exc}"
            ) from exc
        except redis.RedisError as exc:
            self._stats["flush_errors"] += 1
            raise SinkError(f"Redis rejected the alert flush ({len(self._buffer)} kept): {exc}") from exc
        return [int(x) for x in result]

    def close(self) -> None:
        """Close the client this sink made. Buffered alerts are not flushed (call flush first)."""
        if self._buffer:
            log.warning("closing RedisAlertSink with %d undelivered alerts", len(self._buffer))
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RedisAlertSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
