"""Per-entity alert suppression, decided in event time.

One pure rule (`should_emit`) used by MemorySink and mirrored line for line by the Lua script of
RedisAlertSink: an entity that alerted at event time t with score s stays quiet for alerts whose
event time is within `window_s` of t, unless the new score is at least `score_factor` x s (and higher).
Only emitted alerts move the mark, so a noisy entity alerts at most once per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class SuppressionConfig:
    """`window_s` = 0 turns suppression off."""

    window_s: float = 0.0
    score_factor: float = 1.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s >= 0):
            raise ValueError(f"suppression window_s must be finite and >= 0, got {self.window_s!r}")
        if not (math.isfinite(self.score_factor) and self.score_factor >= 1.0):
            raise ValueError(f"suppression score_factor must be finite and >= 1, got {self.score_factor!r}")

    @property
    def enabled(self) -> bool:
        return self.window_s > 0


class Mark(NamedTuple):
    """The last emitted alert of an entity."""

    score: float
    event_ts: float


def should_emit(last: Mark | None, score: float, event_ts: float, config: SuppressionConfig) -> bool:
    """True when an alert (score, event_ts) goes out given the entity's last emitted alert.

    >>> cfg = SuppressionConfig(window_s=60, score_factor=2.0)
    >>> should_emit(None, 1.0, 0.0, cfg)
    True
    >>> should_emit(Mark(1.0, 0.0), 1.5, 30.0, cfg), should_emit(Mark(1.0, 0.0), 2.0, 30.0, cfg)
    (False, True)
    >>> should_emit(Mark(1.0, 0.0), 1.0, 60.0, cfg)
    True
    """
    if not config.enabled or last is None:
        return True
    dt = event_ts - last.event_ts
    escalated = score >= last.score * config.score_factor and score > last.score
    return escalated or not (-config.window_s < dt < config.window_s)


class SuppressionState:
    """In-memory marks per (domain, entity), applying `should_emit`."""

    def __init__(self, config: SuppressionConfig) -> None:
        self.config = config
        self._marks: dict[tuple[str, str], Mark] = {}

    def decide(self, domain: str, entity: str, score: float, event_ts: float) -> bool:
        """Whether to emit; an emitted alert becomes the entity's new mark."""
        key = (domain, entity)
        if not should_emit(self._marks.get(key), score, event_ts, self.config):
            return False
        if self.config.enabled:
            self._marks[key] = Mark(score, event_ts)
        return True

    def __len__(self) -> int:
        return len(self._marks)
