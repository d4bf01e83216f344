"""In-memory alert sink for backtests and tests: same interface and semantics as RedisAlertSink."""

from __future__ import annotations

from collections.abc import Iterable

from sinks.alert import Alert, check_alert
from sinks.suppression import SuppressionConfig, SuppressionState


class MemorySink:
    """Buffers on `add`, delivers to `alerts` on `flush`, deduplicating by alert_id and suppressing per entity.

    >>> from sinks.alert import Alert, check_alert
    >>> sink = MemorySink()
    >>> a = Alert("id1", "e1", "card-7", "transactions", 0.9, 0.5, "v1", 10.0, 11.0)
    >>> sink.add([a, a]); sink.flush()
    1
    >>> sink.stats["written"], sink.stats["duplicates"]
    (1, 1)
    """

    def __init__(self, suppression_s: float = 0.0, suppression_factor: float = 1.5) -> None:
        self.suppression = SuppressionState(SuppressionConfig(suppression_s, suppression_factor))
        self.alerts: list[Alert] = []
        self._buffer: list[Alert] = []
        self._decided: set[str] = set()
        self._stats = {"written": 0, "duplicates": 0, "suppressed": 0, "flushes": 0, "flush_errors": 0}

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats, "pending": len(self._buffer)}

    def add(self, alerts: Iterable[Alert]) -> None:
        batch = list(alerts)
        for alert in batch:
            check_alert(alert)
        self._buffer.extend(batch)

    def flush(self) -> int:
        written = 0
        for alert in self._buffer:
            if alert.alert_id in self._decided:
                self._stats["duplicates"] += 1
                continue
            self._decided.add(alert.alert_id)
            if self.suppression.decide(alert.domain, alert.entity, alert.score, alert.event_ts):
                self.alerts.append(alert)
                written += 1
            else:
                self._stats["suppressed"] += 1
        self._stats["written"] += written
        self._stats["flushes"] += 1
        self._buffer.clear()
        return written

    def by_domain(self, domain: str) -> list[Alert]:
        return [a for a in self.alerts if a.domain == domain]

    def close(self) -> None:
        """Nothing to release; present for interface parity."""
