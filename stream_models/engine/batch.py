"""What the stream engine returns for one batch of events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class Episode(NamedTuple):
    """A device's alarm episode: the event that opened it, its first and latest event times, peak score, rows,
    and the threshold its first alarm crossed."""

    opened_by: str
    start_ts: float
    end_ts: float
    peak: float
    rows: int
    threshold: float


@dataclass
class DomainBatch:
    """The engine's verdict on B events (arrival order)."""

    keys: list[str]  # entity per event (card, device)
    scores: np.ndarray  # (B,) float64; NaN where the event could not be scored yet (window not full)
    thresholds: np.ndarray  # (B,) float64, the threshold each event was classified with
    flags: np.ndarray  # (B,) bool, events the champion raises as alerts
    suppressed: np.ndarray  # (B,) bool, above threshold but held back (warm-up, alarm filter)
    champion_alerts: np.ndarray | None = None  # (B,) bool, rows whose alert is the champion's (not only a rule's)
    warming_up: np.ndarray | None = None  # (B,) bool, scored before the champion's threshold was armed
    champions: list[str] = field(default_factory=list)  # (B,) the champion each event was scored under
    # row -> top features, for the rows that raise an alert (with alarm episodes: each episode's first row)
    explanations: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)  # row -> why the rule (the card profile) alerted
    # sensors: (row, "open" | "close" | "regime change", episode) as devices' alarm episodes open and close
    episodes: list[tuple[int, str, Episode]] = field(default_factory=list)
    per_episode: bool = False  # alerts are the episodes' ends, not every alarmed row
    over_budget: list[int] = field(default_factory=list)  # first row held back in an event-time minute over budget
    held_back: int = 0  # alerts held back by the per-minute budget
    rule: str = ""  # the rule that alerts beside the champion ("" = none); its scores are in contender_scores
    rule_threshold: float = float("nan")
    # every contender's own verdict (the champion's too), name -> (B,): each detector's series stays whole
    # across a promotion, while `scores`/`flags` are what was served
    contender_scores: dict[str, np.ndarray] = field(default_factory=dict)
    contender_flags: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.warming_up is None:
            self.warming_up = np.zeros(len(self.keys), bool)
        if self.champion_alerts is None:
            self.champion_alerts = np.zeros(len(self.keys), bool)
        if not self.champions:
            self.champions = [""] * len(self.keys)

    @property
    def regime_changes(self) -> list[int]:
        """Rows where a device's alarm episode became its new normal."""
        return [row for row, kind, _ in self.episodes if kind == "regime change"]

    def verdict(self, row: int) -> tuple[str, float, float]:
        """(detector, score, threshold) behind the alert of `row`: the champion's, else the rule's."""
        assert self.champion_alerts is not None
        if self.rule and row in self.reasons and not self.champion_alerts[row]:
            return self.rule, float(self.contender_scores[self.rule][row]), self.rule_threshold
        return self.champions[row], float(self.scores[row]), float(self.thresholds[row])
