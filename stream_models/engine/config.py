"""The stream engine's configuration: one frozen dataclass per domain (pipeline.domains builds it from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream_models.errors import ModelError

DOMAINS = ("transactions", "sensors", "records")


@dataclass(frozen=True)
class EngineConfig:
    """Featurizer -> contenders -> thresholds -> alarm rule -> chunked learning, for one domain."""

    domain: str = "transactions"
    detector: str = "dense_autoencoder"  # the champion: its flags become alerts
    challengers: tuple[str, ...] = ()
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # detector name -> constructor keywords
    model_version: str = "v1"
    device: str | None = None  # None: cuda when available, else cpu
    seed: int = 0
    # thresholds
    threshold_quantile: float = 0.995
    threshold_warmup: int = 200  # scores a threshold sees before it flags anything
    threshold_window: int = 5_000  # recent scores the quantile is taken over
    probability_threshold: float = 0.0  # > 0: a detector learning from labels flags at this probability, whatever
    # its quantile threshold says
    top_features: int = 3
    label_free_alerts: bool = True  # False: a champion that does not learn from labels scores but raises no alert
    alert_budget_per_minute: int = 0  # > 0: alerts beyond this many per event-time minute are held back, counted
    # (transactions: sensors alert per episode)
    # warm-up and learning
    warmup_events: int = 500  # burn-in: the thresholds ignore these first scores
    warmup_fit_epochs: int = 0  # > 0: at the end of warm-up every contender trains this many passes over it
    warmup_holdout: float = 0.0  # share of the warm-up (its end) kept out of that fit to set the thresholds on
    learn_after_warmup: bool = True  # False: models and thresholds are frozen once warm-up ends
    learn_every: int = 512  # events per learning chunk; scores do not depend on poll sizes
    learn_in_background: bool = True  # torch detectors learn on a copy beside the scoring thread (stream_models.learner)
    learn_in_process: bool = True  # ... in the learning process where it can fork (Linux, CPU), else in a thread
    steps_per_update: int = 2
    label_free_steps_per_update: int | None = None  # the same for detectors that do not learn from labels (None: as above)
    batch_size: int = 512
    replay_capacity: int = 20_000
    drift_delta: float = 0.002  # ADWIN confidence on the scores; 0 = no drift monitor
    drift_lr_boost: float = 3.0
    label_delay_s: float = 7 * 86_400.0  # after this, an unlabelled event counts as normal
    # champion / challengers
    auto_promote: bool = False  # promote the challenger with the best average precision on labels
    promote_min_positives: int = 50
    promote_margin: float = 0.02
    # transactions
    profile_threshold: float = 0.0  # > 0: the card profile alerts at this score (-log10 tail probability)
    profile_until_armed: bool = False  # the cold-start rule alerts only until the champion's threshold is armed
    sequence_length: int = 5  # per-card sequence length for detectors that consume sequences
    attributes: tuple[Any, ...] = ()  # declared event attributes (stream_models.transaction_features.AttributeSpec)
    # sensors
    window: int = 16  # readings per window
    freeze_normalisation_after: int | None = None  # per device, readings after which mean/std stay fixed
    drift_horizon: float | None = None  # widen a channel's scale by its warm-up trend over this many readings
    alarm_m: int = 2  # flags among the last alarm_n rows of a device that raise an alarm
    alarm_n: int = 3
    alarm_severe: float = 0.0  # > 0: a flag with score >= this x threshold alarms at once, past the filter
    quiet_rows: int = 30  # learn from a device only this many rows after its last flag
    regime_rows: int = 0  # > 0: a device whose alarm episode lasts this many rows takes its new level as normal
    episode_gap_rows: int = 200  # quiet rows that close a device's alarm episode
    # records
    features: tuple[str, ...] = ()  # feature names in order; () = the first record's, sorted

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ModelError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.detector in self.challengers or len(set(self.challengers)) != len(self.challengers):
            raise ModelError(f"challengers {list(self.challengers)} must be distinct and exclude {self.detector!r}")
        if not 1 <= self.alarm_m <= self.alarm_n:
            raise ModelError(f"need 1 <= alarm_m ({self.alarm_m}) <= alarm_n ({self.alarm_n})")
        if self.learn_every < 1:
            raise ModelError("learn_every must be >= 1")
        if self.domain == "sensors" and self.alert_budget_per_minute:
            raise ModelError("alert_budget_per_minute is for transactions: sensors alert once per episode")

    @property
    def contenders(self) -> list[str]:
        return [self.detector, *self.challengers]
