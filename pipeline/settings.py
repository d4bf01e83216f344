"""One frozen settings object, from env vars (`STREAMWARDEN_...`, nested with `__`) and an optional YAML file.

Precedence (highest first): explicit overrides (CLI flags), environment variables, the YAML file
(`--config FILE` or `STREAMWARDEN_CONFIG`), the shorthands `STREAMWARDEN_KAFKA` (bootstrap servers)
and `STREAMWARDEN_REDIS_URL`, then the defaults below. Unknown keys, and `STREAMWARDEN_*` variables that
name no section (see OTHER_ENV_VARS), are rejected with their name.

>>> s = Settings()
>>> s.kafka.security_protocol
'PLAINTEXT'
>>> "password" in str(Settings(redis={"url": "redis://u:pw@h:6379/0"}).redis.masked_url())
False
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from pipeline.errors import ConfigError

ENV_PREFIX = "STREAMWARDEN_"
CONFIG_ENV = "STREAMWARDEN_CONFIG"
# Single-value shorthands other tools (tests, `dev up`) already use; not nested sections.
KAFKA_SHORTHAND_ENV = "STREAMWARDEN_KAFKA"
REDIS_SHORTHAND_ENV = "STREAMWARDEN_REDIS_URL"
# Every other STREAMWARDEN_* name must start with a settings section (`STREAMWARDEN_RUNNER__...`).
OTHER_ENV_VARS = frozenset({
    CONFIG_ENV, KAFKA_SHORTHAND_ENV, REDIS_SHORTHAND_ENV,
    # read by pipeline.services (`streamwarden dev up`, the demo, tests, bench)
    "STREAMWARDEN_HOME", "STREAMWARDEN_KAFKA_PORT", "STREAMWARDEN_KAFKA_CONTROLLER_PORT", "STREAMWARDEN_REDIS_PORT",
    "STREAMWARDEN_KAFKA_VERSION", "STREAMWARDEN_KAFKA_SECURE",
    "STREAMWARDEN_KEEP_SERVICES",  # tests/conftest.py and bench: leave the local services up
    "STREAMWARDEN_DEVICE",  # stream_models.device
    "STREAMWARDEN_FRAUD_DATA",  # bench/fraud_quality.py
})
MASK = "**********"

Domain = Literal["transactions", "sensors", "records"]
DomainChoice = Literal["transactions", "sensors", "records", "all"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Client settings passed straight through to kafka-python (see `client_config`)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "streamwarden"
    group_id: str = "streamwarden"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    sasl_kerberos_service_name: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(45_000, ge=1_000)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    fetch_min_bytes: int = Field(
        65_536, ge=1, description="the broker answers a fetch once this much data is there (or fetch_max_wait_ms "
        "passed): under load a poll returns up to fetch_max_wait_ms of events instead of a handful")
    fetch_max_wait_ms: int = Field(
        10, ge=0, le=30_000, description="longest the broker holds a fetch waiting for fetch_min_bytes. Low: a "
        "worker also reads the quiet labels topic, and a fetch held for it holds back the events behind it")
    startup_timeout_s: float = Field(8.0, gt=0, le=300, description="start-up: give up on an unreachable broker after this")
    client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python", description="the worker's consumer: confluent = librdkafka (pip install 'streamwarden[fast]')")

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl and self.sasl_mechanism is None:
            raise ValueError(f"kafka.sasl_mechanism is required with security_protocol={self.security_protocol}")
        if not uses_sasl and self.sasl_mechanism is not None:
            raise ValueError(
                f"kafka.sasl_mechanism={self.sasl_mechanism} needs security_protocol SASL_PLAINTEXT or SASL_SSL"
            )
        if uses_sasl and self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"kafka.sasl_plain_username and kafka.sasl_plain_password are required "
                    f"with sasl_mechanism={self.sasl_mechanism}"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"kafka.{name}: file {path} does not exist")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("kafka.ssl_certfile and kafka.ssl_keyfile go together")
        return self

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by consumers, producers and admin clients (secrets revealed)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": int(self.startup_timeout_s * 1000),
        }
        if self.sasl_mechanism is not None:
            config["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_plain_username is not None:
            config["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            config["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        if self.sasl_kerberos_service_name is not None:
            config["sasl_kerberos_service_name"] = self.sasl_kerberos_service_name
        if self.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name) is not None:
                    config[name] = str(getattr(self, name))
            if self.ssl_password is not None:
                config["ssl_password"] = self.ssl_password.get_secret_value()
        return config

    def consumer_config(self) -> dict[str, Any]:
        """Client config plus the consumer-group settings."""
        return {
            **self.client_config(),
            "group_id": self.group_id,
            "auto_offset_reset": self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "fetch_min_bytes": self.fetch_min_bytes,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }


class TopicSettings(_Section):
    transactions: str = "transactions"
    sensors: str = "sensors"
    records: str = "records"
    labels: str = "labels"

    @model_validator(mode="after")
    def _distinct(self) -> TopicSettings:
        names = [self.transactions, self.sensors, self.records, self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"topics.transactions, .sensors, .records and .labels must differ, got {names}")
        return self

    def for_domain(self, domain: str) -> str:
        return str(getattr(self, domain))


def mask_url(url: str) -> str:
    """`redis://user:secret@host:6379/0` -> `redis://user:**********@host:6379/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


class RedisSettings(_Section):
    """Where alerts go. `url` may carry an ACL user and password (`rediss://user:pw@host:6380/0`);
    `username` / `password` override the URL's. Key layout and delivery rules follow sinks.RedisSinkConfig."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    username: str | None = None
    password: SecretStr | None = None
    prefix: str = "streamwarden:"
    stream: str | None = None  # default <prefix>alerts
    channel_prefix: str | None = None  # default <prefix>alerts:  (one channel per domain)
    maxlen: int = Field(1_000_000, ge=0)
    dedup_ttl_s: int = Field(7 * 86_400, ge=1)
    suppression_s: float = Field(0.0, ge=0)
    suppression_factor: float = Field(1.5, ge=1.0)
    startup_timeout_s: float = Field(8.0, gt=0, le=300, description="start-up: give up on an unreachable Redis after this")

    def connection(self) -> Any:
        """sinks.connection.RedisConfig (secrets revealed)."""
        from sinks.connection import RedisConfig

        return RedisConfig(url=self.url.get_secret_value(), username=self.username,
                           password=self.password.get_secret_value() if self.password else None)

    def sink_config(self) -> Any:
        """sinks.redis_sink.RedisSinkConfig."""
        from sinks.redis_sink import RedisSinkConfig

        return RedisSinkConfig(prefix=self.prefix, stream=self.stream, channel_prefix=self.channel_prefix,
                               maxlen=self.maxlen, dedup_ttl_s=self.dedup_ttl_s, suppression_s=self.suppression_s,
                               suppression_factor=self.suppression_factor)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis.url must start with redis://, rediss:// or unix://, got {scheme or 'no'} scheme")
        return value

    def masked_url(self) -> str:
        return mask_url(self.url.get_secret_value())


def _detector_key(name: Any) -> str:
    """Detector names from environment variables arrive upper-case; plug-in paths (`mod:Class`) keep their case."""
    text = str(name)
    return text if ":" in text else text.lower()


class ModelSettings(_Section):
    """Per-domain engine settings (the fields of stream_models.engine.EngineConfig; pipeline.domains maps them).

    `detector` is the champion (its flags become alerts), `challengers` score beside it; any registered
    detector whose input the domain gives (`streamwarden models list`). `params` holds constructor
    keywords per detector, e.g. `{mlp_classifier: {hidden: [256]}}`.
    """

    detector: str = "dense_autoencoder"
    challengers: tuple[str, ...] = ()
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    model_version: str = "v1"
    threshold_quantile: float = Field(0.995, gt=0.5, lt=1.0)
    threshold_warmup: int = Field(200, ge=1, description="scores the threshold sees before it flags anything")
    threshold_window: int = Field(5_000, ge=1, description="recent scores the threshold quantile is taken over")
    probability_threshold: float = Field(0.5, ge=0, lt=1, description="a detector that learns from labels (its "
                                         "score is a fraud probability) flags at this probability even where its "
                                         "quantile threshold is higher, once it has learned from "
                                         "promote_min_positives frauds; 0 = the quantile alone")
    top_features: int = Field(3, ge=0)
    label_free_alerts: bool = Field(True, description="False: a champion that does not learn from labels scores "
                                    "every event but raises no alert (the rules and a promoted supervised model do)")
    alert_budget_per_minute: int = Field(0, ge=0, description="transactions: alerts beyond this many per event-time "
                                         "minute are held back, counted and summarised in one alert; 0 = no budget")
    warmup_events: int = Field(500, ge=0, description="model burn-in: the thresholds ignore these first scores")
    warmup_fit_epochs: int = Field(0, ge=0, description="> 0: train this many passes over the warm-up at its end")
    warmup_holdout: float = Field(0.0, ge=0, lt=1, description="share of the warm-up kept out of that fit to set "
                                  "the thresholds on")
    learn_after_warmup: bool = Field(True, description="False: models and thresholds freeze after warm-up")
    learn_every: int = Field(512, ge=1, description="events per learning chunk; scores do not depend on poll sizes")
    learn_in_background: bool = Field(True, description="torch detectors learn on a copy beside the scoring thread; "
                                      "its weights score from the chunk after next (off with model_sync.enabled)")
    learn_in_process: bool = Field(True, description="the copy learns in a forked learning process (Linux, CPU; "
                                   "scores are the same), so learning and scoring never wait for each other's "
                                   "interpreter lock; false: in a second thread")
    steps_per_update: int = Field(2, ge=0, description="replay minibatches per learning chunk")
    label_free_steps_per_update: int | None = Field(None, ge=0, description="the same for detectors that do not "
                                                    "learn from labels; none = steps_per_update")
    batch_size: int = Field(512, ge=1, description="rows per replay minibatch")
    replay_capacity: int = Field(20_000, ge=1)
    drift_delta: float = Field(0.002, ge=0, lt=1, description="ADWIN confidence on the scores; 0 = no drift monitor")
    drift_lr_boost: float = Field(3.0, gt=0)
    label_delay_s: float = Field(7 * 86_400.0, ge=0, description="after this, an unlabelled event counts as normal")
    auto_promote: bool = Field(False, description="promote the challenger with the best average precision on labels")
    promote_min_positives: int = Field(50, ge=1)
    promote_margin: float = Field(0.02, ge=0)
    profile_threshold: float = Field(0.0, ge=0, description="the cold-start rule (card profile, reading profile) alerts "
                                     "at this score (-log10 of a tail probability) from the first events; 0 = off")
    profile_until_armed: bool = Field(False, description="the cold-start rule alerts only until the models are armed "
                                      "(it hands over to them); False = it keeps alerting beside them")
    sequence_length: int = Field(5, ge=1, description="transactions: card sequence length for sequence detectors")
    window: int = Field(16, ge=2, description="sensors: readings per window")
    freeze_normalisation_after: int | None = Field(None, ge=1, description="sensors: per-device readings to normalise on")
    drift_horizon: float | None = Field(None, gt=0, description="sensors: widen scales by the warm-up trend")
    alarm_m: int = Field(2, ge=1, description="sensors: flags among the last alarm_n rows that raise an alarm")
    alarm_n: int = Field(3, ge=1)
    alarm_severe: float = Field(0.0, ge=0, description="sensors: a reading scoring this many times its threshold "
                                "alarms at once, without waiting for alarm_m of alarm_n; 0 = off")
    quiet_rows: int = Field(30, ge=0, description="sensors: learn from a device only this many rows after a flag")
    regime_rows: int = Field(0, ge=0, description="sensors: a device whose alarm episode lasts this many rows takes "
                             "its new level as normal (one regime-change event, then it warms up afresh); 0 = never")
    episode_gap_rows: int = Field(200, ge=1, description="sensors: quiet rows that close a device's alarm episode")
    seed: int = 0

    @field_validator("params", mode="before")
    @classmethod
    def _parse_param_values(cls, value: Any) -> Any:
        """Values from environment variables arrive as text: read them as YAML scalars or lists ("[8, 4]")."""
        if not isinstance(value, Mapping):
            return value
        return {_detector_key(name): {str(k): yaml.safe_load(v) if isinstance(v, str) else v for k, v in kw.items()}
                if isinstance(kw, Mapping) else kw for name, kw in value.items()}

    @model_validator(mode="after")
    def _challengers_distinct(self) -> ModelSettings:
        if self.detector in self.challengers:
            raise ValueError(f"challengers {list(self.challengers)} must not include the champion {self.detector!r}")
        if self.alarm_m > self.alarm_n:
            raise ValueError(f"alarm_m ({self.alarm_m}) must not exceed alarm_n ({self.alarm_n})")
        if len(set(self.challengers)) != len(self.challengers):
            raise ValueError(f"challengers {list(self.challengers)} contain duplicates")
        return self


class AttributeSettings(_Section):
    """A transaction attribute the models use: a key of the events' `attributes` object (or their currency, channel or
    merchant_category field). Categorical values are hashed into `buckets` one-hot features; `per_card_days` adds,
    per window, how many of the card's transactions had the same value and their mean amount (numeric: the value's
    z-score against the card's recent values)."""

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["categorical", "numeric"] = "categorical"
    buckets: int = Field(16, ge=0, le=1024)
    per_card_days: tuple[int, ...] = ()


class TransactionModelSettings(ModelSettings):
    """Measured defaults (BENCHMARKS.md, Fraud Handbook): a label-free autoencoder scores from the first
    event; a supervised MLP learns beside it from chargebacks and takes over once it ranks better; the card
    profile alerts on rare amounts, terminals and pace from a card's first transactions."""

    detector: str = "dense_autoencoder"
    challengers: tuple[str, ...] = ("mlp_classifier",)
    auto_promote: bool = True
    label_free_alerts: bool = Field(False, description="False: a champion that does not learn from labels scores "
                                    "every event but raises no alert (the rules and a promoted supervised model do)")
    alert_budget_per_minute: int = Field(60, ge=0, description="transactions: alerts beyond this many per event-time "
                                         "minute are held back, counted and summarised in one alert; 0 = no budget")
    profile_threshold: float = Field(3.5, ge=0, description="transactions: the card profile alerts at this "
                                     "cold-start score (-log10 of a tail probability) from the first events; 0 = off")
    learn_every: int = Field(2048, ge=1, description="events per learning chunk; scores do not depend on poll sizes")
    steps_per_update: int = Field(16, ge=0, description="replay minibatches per learning chunk (32 learns twice as "
                                  "much: +0.006 AP on the Handbook's test weeks, the worker ~10 % slower and its "
                                  "p99 latency ~2.5x longer at the same rate; BENCHMARKS.md, session 21)")
    label_free_steps_per_update: int | None = Field(4, ge=0, description="the same for detectors that do not learn "
                                                    "from labels (the autoencoder, which raises no alert here, and "
                                                    "label-free challengers such as halfspace_trees)")
    replay_capacity: int = Field(140_000, ge=1)
    attributes: tuple[AttributeSettings, ...] = Field((), description="event attributes the models use (see "
                                                      "AttributeSettings); none by default")

    @field_validator("attributes")
    @classmethod
    def _unique_attributes(cls, value: tuple[AttributeSettings, ...]) -> tuple[AttributeSettings, ...]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError(f"attribute names must be unique, got {names}")
        return value


class RecordModelSettings(ModelSettings):
    """Ready-made feature vectors (`{event_id, ts, entity_id, features{...}}`), scored row by row: a label-free
    autoencoder alerts on each row on its own from the end of warm-up; a supervised MLP learns beside it from the
    labels topic and takes over once it ranks better."""

    detector: str = "dense_autoencoder"
    challengers: tuple[str, ...] = ("mlp_classifier",)
    auto_promote: bool = True
    features: tuple[str, ...] = Field((), description="records: the feature names, in order; empty = the first "
                                      "record's, sorted (a record missing one is scored with its running mean)")


class SensorModelSettings(ModelSettings):
    """Measured defaults (BENCHMARKS.md, SKAB): an LSTM forecaster fit on the warm-up, then frozen, with a
    threshold at the 99th percentile of its warm-up errors and a 5-of-10 alarm rule (a reading at 3x the
    threshold alarms alone); an alarm episode ends after 200 quiet readings, and one of 720 readings is a
    regime change."""

    detector: str = "lstm_forecaster"
    params: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"lstm_forecaster": {"hidden": 32}})
    threshold_quantile: float = Field(0.99, gt=0.5, lt=1.0)
    threshold_warmup: int = Field(100, ge=1, description="scores the threshold sees before it flags anything")
    threshold_window: int = Field(2_000, ge=1, description="recent scores the threshold quantile is taken over")
    warmup_events: int = Field(400, ge=0, description="the first readings: the models are fit on them")
    warmup_fit_epochs: int = Field(30, ge=0, description="> 0: train this many passes over the warm-up at its end")
    learn_after_warmup: bool = Field(False, description="False: models and thresholds freeze after warm-up")
    label_delay_s: float = Field(3_600.0, ge=0, description="windows held back from learning wait this long")
    drift_delta: float = Field(0.0, ge=0, lt=1, description="off: autocorrelated sensor scores trip ADWIN constantly")
    window: int = Field(30, ge=2, description="sensors: readings per window")
    freeze_normalisation_after: int | None = Field(400, ge=1, description="sensors: per-device readings to normalise on")
    drift_horizon: float | None = Field(800.0, gt=0, description="sensors: widen scales by the warm-up trend")
    alarm_m: int = Field(5, ge=1, description="sensors: flags among the last alarm_n rows that raise an alarm")
    alarm_n: int = Field(10, ge=1)
    alarm_severe: float = Field(3.0, ge=0, description="sensors: a reading scoring this many times its threshold "
                                "alarms at once, without waiting for alarm_m of alarm_n; 0 = off")
    regime_rows: int = Field(720, ge=0, description="sensors: a device whose alarm episode lasts this many rows takes "
                             "its new level as normal (one regime-change event, then it warms up afresh); 0 = never")
    profile_threshold: float = Field(5.0, ge=0, description="sensors: the reading profile alerts at this score (-log10 "
                                     "of a tail probability: 5 = as rare as 1 in 100,000) until the models are armed; "
                                     "0 = off")
    profile_until_armed: bool = Field(True, description="the reading profile alerts only until the models are armed "
                                      "(it hands over to them)")


class RunnerSettings(_Section):
    domain: DomainChoice = "transactions"
    max_records: int = Field(2000, ge=1, description="most records one poll returns: larger polls leave fewer "
                             "partly filled scoring blocks to score again")
    poll_timeout_ms: int = Field(500, ge=0)
    commit_interval_s: float = Field(1.0, ge=0)
    checkpoint_interval_s: float = Field(60.0, ge=0)
    state_dir: Path = Path(".streamwarden/state")
    backoff_initial_s: float = Field(0.1, gt=0)
    backoff_max_s: float = Field(5.0, gt=0)
    flush_alerts_every_batch: bool = Field(True, description="alerts reach Redis after their batch, not at commit")
    device: str = "auto"
    torch_threads: int = Field(1, ge=0, description="torch CPU threads per worker (one worker per core); 0 = torch's default")

    @model_validator(mode="after")
    def _backoff(self) -> RunnerSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"runner.backoff_initial_s ({self.backoff_initial_s}) must not exceed "
                f"runner.backoff_max_s ({self.backoff_max_s})"
            )
        if self.checkpoint_interval_s and self.checkpoint_interval_s < self.commit_interval_s:
            raise ValueError(
                f"runner.checkpoint_interval_s ({self.checkpoint_interval_s}) must be >= "
                f"runner.commit_interval_s ({self.commit_interval_s}); checkpoints happen at commits"
            )
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"runner.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self


class StateSettings(_Section):
    """Partition handover: where each partition's entity state waits while the partition changes worker.

    `store`: None (off: one worker keeps all its state, the default), "redis" (the alert Redis, under
    `<redis.prefix>partition-state:`), a `redis://` / `rediss://` URL, or a directory every worker reaches.
    """

    store: str | None = None
    partitions: int | None = Field(None, ge=1, description="partitions of the event topics (None: ask Kafka)")
    ttl_s: int | None = Field(None, ge=1, description="redis: expire states nobody refreshed for this long")


class ModelSyncSettings(_Section):
    """Federated averaging of the detectors across workers (pipeline.model_sync); off by default."""

    enabled: bool = False
    topic: str = "streamwarden.models"  # one compacted topic per domain and detector: <topic>.<domain>.<detector>
    interval_s: float = Field(60.0, ge=0, description="sync at the first checkpoint boundary this long after the last")
    worker_id: str | None = None  # default: <kafka.client_id>-<host>-<pid>
    timeout_s: float = Field(30.0, gt=0, description="how long one sync may wait to read the peers' models")


class ObservabilitySettings(_Section):
    metrics_port: int | None = Field(None, ge=0, le=65_535)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ConsoleSettings(_Section):
    """`streamwarden console`, the analysts' web page. Off the loopback interface it needs `token` (HTTP basic
    auth password, or `Authorization: Bearer <token>`)."""

    host: str = "127.0.0.1"
    port: int = Field(8700, ge=0, le=65_535)
    token: SecretStr | None = None
    recent: int = Field(200, ge=1, le=5_000, description="alerts a page shows when it opens")


class BacktestSettings(_Section):
    report_dir: Path = Path("reports")
    precision_k: int = Field(100, ge=1)
    max_reject_share: float = Field(0.5, ge=0, le=1, description="a backtest rejecting more of its input fails")


def _check_env_names(environ: Mapping[str, str], sections: list[str]) -> None:
    """Raise ConfigError for a `STREAMWARDEN_*` variable that names no section (pydantic-settings ignores those;
    unknown keys inside a section fail validation). Case-insensitive, like pydantic-settings."""
    others = {name.lower() for name in OTHER_ENV_VARS}
    for name in environ:
        lower = name.lower()
        if not lower.startswith(ENV_PREFIX.lower()) or lower in others:
            continue
        section = lower[len(ENV_PREFIX):].split("__", 1)[0]
        if section not in sections:
            hint = "" if "__" in name else f"; other variables: {', '.join(sorted(OTHER_ENV_VARS))}"
            raise ConfigError(f"unknown environment variable {name}: no settings section {section!r} "
                              f"(sections: {', '.join(sections)}{hint})")


class _EnvWithoutShorthands(EnvSettingsSource):
    """The standard env source, minus the single-value shorthands (they are not JSON sections), rejecting
    variables that name no section."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        _check_env_names(os.environ, list(self.settings_cls.model_fields))
        skip = {KAFKA_SHORTHAND_ENV.lower(), REDIS_SHORTHAND_ENV.lower(), CONFIG_ENV.lower()}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() not in skip}


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def _shorthands() -> dict[str, Any]:
    data: dict[str, Any] = {}
    if os.environ.get(KAFKA_SHORTHAND_ENV):
        data["kafka"] = {"bootstrap_servers": os.environ[KAFKA_SHORTHAND_ENV]}
    if os.environ.get(REDIS_SHORTHAND_ENV):
        data["redis"] = {"url": os.environ[REDIS_SHORTHAND_ENV]}
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Lower-priority data (YAML file + shorthands) handed to `settings_customise_sources`.
_file_layer: dict[str, Any] = {}


class Settings(BaseSettings):
    """Everything a worker, backtest or demo needs. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    runner: RunnerSettings = RunnerSettings()
    transactions: TransactionModelSettings = TransactionModelSettings()
    sensors: SensorModelSettings = SensorModelSettings()
    records: RecordModelSettings = RecordModelSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    backtest: BacktestSettings = BacktestSettings()
    state: StateSettings = StateSettings()
    model_sync: ModelSyncSettings = ModelSyncSettings()
    console: ConsoleSettings = ConsoleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() fills _file_layer (file + shorthands); a direct Settings() still honours the shorthands.
        return (init_settings, _EnvWithoutShorthands(settings_cls), _DictSource(settings_cls, _file_layer or _shorthands()))

    def domains(self) -> list[Domain]:
        """The data domains this worker handles ("all": transactions and sensors; records only when named)."""
        if self.runner.domain == "all":
            return ["transactions", "sensors"]
        return [self.runner.domain]

    def model(self, domain: str) -> ModelSettings:
        model: ModelSettings = getattr(self, domain)
        return model

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked (Redis URL keeps its non-secret parts)."""
        data = self.model_dump(mode="json")
        data["redis"]["url"] = self.redis.masked_url()
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.masked(), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (from --config or {CONFIG_ENV})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    env = ENV_PREFIX + "__".join(str(part).upper() for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {loc!r} (from the config file or {env})"
    where = f"setting {loc!r}" if loc else "settings"
    return f"{where}: {error['msg']}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; any problem raises ConfigError naming the setting.

    `overrides` are sections (`runner={"domain": "all"}`) and win over env vars and the file.
    """
    global _file_layer
    path = config_file or os.environ.get(CONFIG_ENV)
    layer = _shorthands()
    if path:
        layer = _deep_merge(layer, _read_yaml(Path(path)))
    _file_layer = layer
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("invalid configuration: " + "; ".join(_describe(e) for e in exc.errors())) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    finally:
        _file_layer = {}
