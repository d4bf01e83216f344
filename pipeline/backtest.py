"""`streamwarden backtest`: the live runner over a replay source, with an in-memory sink.

Progressive validation: every event is scored before the model learns from it. Labels known to
the input (a `label` column, or the `labels` topic for Kafka input) are revealed to the learner
only once event time has passed the event's time plus the label delay, as chargebacks would be.
Input: a CSV/Parquet file (any columns, with `--columns` mapping wire fields to file columns), or
`kafka://TOPIC?from=A&to=B[&time=event|broker][&labels=TOPIC]`. A/B are offsets (integers, per
partition) or date-times (naive = UTC); either may be left out. Date-times select by event time by
default: every partition is read to its end offset and the events with A <= ts < B are kept (events
without a readable `ts` are rejects, as live). `time=broker` selects by the broker's record
timestamps instead (when the records were produced, not when the events happened).

A backtest that scores no event, or rejects more than `backtest.max_reject_share` of its input, has
its reason in `BacktestResult.problem` (the report is still written); the CLI exits 1 with it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pandas as pd

from evaluation.score_log import ScoreLog
from ingest.records import Record
from ingest.schemas import Label, encode_event
from pipeline.domains import build_processor
from pipeline.errors import ConfigError
from pipeline.runner import Runner, RunnerConfig, RunStats
from pipeline.settings import Settings

LABELS_TOPIC = "labels"


class _Seen(msgspec.Struct):
    event_id: str = ""
    ts: float = math.nan


_seen_decoder = msgspec.json.Decoder(_Seen)


@dataclass(frozen=True)
class KafkaInput:
    topic: str
    start: int | None
    end: int | None
    by: str  # "offset", or for epoch-ms bounds "event_time" (the events' ts) or "timestamp" (broker time)
    labels_topic: str | None


def _bound(values: list[str] | None) -> tuple[int | None, str | None]:
    if not values or values[0] == "":
        return None, None
    raw = values[0]
    if raw.lstrip("-").isdigit():
        return int(raw), "offset"
    try:
        return int(pd.Timestamp(raw, tz="UTC").timestamp() * 1000), "time"
    except ValueError as exc:
        raise ConfigError(f"--input: {raw!r} is neither an offset nor a date-time") from exc


def parse_input(spec: str, default_labels_topic: str = LABELS_TOPIC) -> Path | KafkaInput:
    """A file path, or `kafka://topic?from=...&to=...[&time=event|broker][&labels=topic]` (see the module doc)."""
    if not spec.startswith("kafka://"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--input: file {spec} does not exist")
        return path
    parts = urlsplit(spec)
    topic = (parts.netloc + parts.path).strip("/")
    if not topic:
        raise ConfigError("--input kafka:// needs a topic: kafka://TOPIC?from=...&to=...")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"from", "to", "time", "labels"}
    if unknown:
        raise ConfigError(f"--input: unknown parameter(s) {sorted(unknown)}; use from, to, time, labels")
    start, by_start = _bound(query.get("from"))
    end, by_end = _bound(query.get("to"))
    if by_start and by_end and by_start != by_end:
        raise ConfigError("--input: from and to must both be offsets or both date-times")
    by = by_start or by_end or "offset"
    clock = query.get("time", [None])[0]
    if clock not in (None, "event", "broker"):
        raise ConfigError(f"--input: time={clock} must be event (the events' ts, default) or broker")
    if clock and by == "offset" and (start is not None or end is not None):
        raise ConfigError("--input: time= applies to date-time bounds, not offsets")
    if by == "time":
        by = "timestamp" if clock == "broker" else "event_time"
    labels = query.get("labels", [default_labels_topic])[0] or None
    return KafkaInput(topic, start, end, by, labels)


class DelayedLabels:
    """Wraps a replay source: after each poll, appends label records whose reveal time has come.

    The label of an event seen at event time t is revealed once the replay's event time reaches
    t + delay. Only frauds/anomalies (label 1) are revealed, as a chargeback feed would; after the
    delay the others count as genuine.
    """

    def __init__(self, source: Any, positives: set[str], delay_s: float, topic: str = LABELS_TOPIC) -> None:
        self.source = source
        self.topic = topic
        self.delay_s = delay_s
        self.positives = positives
        self._due: list[tuple[float, str]] = []  # heap of (reveal time, event id)
        self._offset = 0
        self.revealed = 0

    @property
    def exhausted(self) -> bool:
        return bool(getattr(self.source, "exhausted", False))

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        records = self.source.poll(max_records, timeout_ms)
        if not records:
            return records
        now = -math.inf
        for record in records:
            try:
                seen = _seen_decoder.decode(record.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # the runner sends it to the dead letters
            if math.isfinite(seen.ts):
                now = max(now, seen.ts)
                if seen.event_id in self.positives:
                    heapq.heappush(self._due, (seen.ts + self.delay_s, seen.event_id))
        out = list(records)
        while self._due and self._due[0][0] <= now:
            reveal_ts, event_id = heapq.heappop(self._due)
            value = encode_event(Label(event_id=event_id, label=1, ts=reveal_ts))
            out.append(Record(self.topic, 0, self._offset, int(reveal_ts * 1000), event_id.encode(), value))
            self._offset += 1
            self.revealed += 1
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.source.commit({tp: o for tp, o in offsets.items() if tp[0] != self.topic})

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


class ListDeadLetters:
    """The backtest's dead-letter queue: rejects are kept in memory and counted in the report."""

    def __init__(self) -> None:
        self.rejects: list[Any] = []
        self._pending: list[Any] = []

    def add(self, rejects: Sequence[Any]) -> None:
        self._pending.extend(rejects)

    def flush(self) -> None:
        self.rejects.extend(self._pending)
        self._pending.clear()


@dataclass
class BacktestResult:
    scores: pd.DataFrame
    alerts: list[Any]
    stats: RunStats
    rejects: int
    labels_revealed: int
    report: Path | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # why the backtest counts as failed (nothing scored, too many rejects)


def find_problem(events: int, rejects: Sequence[Any], max_reject_share: float, selection: str = "") -> str | None:
    """None when the backtest scored something and rejected at most `max_reject_share` of its input (scored +
    rejected events); else one line: the problem, the counts, the commonest reject reasons with an example.
    `selection` says what the input's range left out; it is shown when nothing was scored."""
    total = events + len(rejects)
    note = f" ({selection})" if selection else ""
    if events == 0 and not rejects:
        return f"scored no events: the input held none{note}"
    if events == 0:
        problem = f"scored no events: all {total} input events were rejected{note}"
    elif len(rejects) > max_reject_share * total:
        problem = (f"rejected {len(rejects)} of {total} input events ({len(rejects) / total:.0%}), more than "
                   f"backtest.max_reject_share = {max_reject_share:g}")
    else:
        return None
    examples: dict[str, str] = {}
    for reject in rejects:
        examples.setdefault(reject.reason.value, reject.detail)
    reasons = "; ".join(f"{reason} x{n}, e.g. {examples[reason][:200]}"
                        for reason, n in Counter(r.reason.value for r in rejects).most_common(2))
    fix = "" if events == 0 else (" (fix the input or --columns, or raise backtest.max_reject_share, "
                                  "e.g. STREAMWARDEN_BACKTEST__MAX_REJECT_SHARE=0.9)")
    return f"{problem}{fix}; most common: {reasons}"


def unscored_sensors(frame: Any, window: int) -> str:
    """Why a sensors backtest scored no reading: no device reached a full window.

    >>> import pandas as pd
    >>> unscored_sensors(pd.DataFrame({"entity": ["a", "b", "b"]}), 30)
    'scored no reading: the sensors domain scores windows of 30 readings per device (sensors.window) and the most any device had was 2 (2 devices); one row per entity is the records domain (--domain records)'
    """
    counts = frame["entity"].value_counts()
    return (f"scored no reading: the sensors domain scores windows of {window} readings per device (sensors.window) "
            f"and the most any device had was {int(counts.max())} ({len(counts)} devices); one row per entity is the "
            "records domain (--domain records)")


def _kafka_labels(settings: Settings, topic: str) -> dict[str, int]:
    """Every label on the labels topic (empty when the topic does not exist)."""
    from ingest.decode import decode_batch
    from ingest.errors import ReplaySourceError
    from ingest.replay import KafkaRangeSource

    try:
        source = KafkaRangeSource(settings.kafka.bootstrap_servers, topic, config=_replay_config(settings))
    except ReplaySourceError:
        return {}
    labels: dict[str, int] = {}
    with source:
        while not source.exhausted:
            for label in decode_batch(source.poll(5000, 1000), "labels").events:
                labels[label.event_id] = int(label.label)
    return labels


def _replay_config(settings: Settings) -> dict[str, Any]:
    config = settings.kafka.client_config()
    config.pop("bootstrap_servers")
    config["client_id"] = f"{settings.kafka.client_id}-replay"
    return config


def run_backtest(
    settings: Settings,
    input_spec: str,
    *,
    domain: str = "transactions",
    columns: Any = None,
    label_delay_s: float | None = None,
    report_dir: Path | None = None,
    compare: Sequence[str] = (),
    progress: bool = False,
    max_records: int = 2000,
    seed: int | None = None,
    period: str | None = None,
    evaluate_from: float | None = None,
    evaluate_to: float | None = None,
    known_entity_days: float | None = None,
    file_options: dict[str, Any] | None = None,
) -> BacktestResult:
    """Replay `input_spec` through the runner; write the report when `report_dir` is given.

    The report's metrics count events after warm-up, inside [evaluate_from, evaluate_to) (event time,
    epoch seconds) and per `period` ("day", "week"; None: by the span); with `known_entity_days`, the
    entities with a fraud revealed in that many days before a period are left out of it (the Fraud
    Handbook's known-compromised-card rule). `file_options` go to `FileSource` (`labels`, `time_origin`)."""
    from ingest.replay import FileSource, KafkaRangeSource
    from sinks.memory_sink import MemorySink

    if domain not in ("transactions", "sensors", "records"):
        raise ConfigError(f"--domain must be transactions, sensors or records for a backtest, got {domain!r}")
    model = settings.model(domain)
    if compare:
        model = model.model_copy(update={"detector": compare[0], "challengers": tuple(compare[1:])})
    delay = model.label_delay_s if label_delay_s is None else label_delay_s
    model = model.model_copy(update={"label_delay_s": delay, **({"seed": seed} if seed is not None else {})})
    settings = settings.model_copy(update={domain: model})

    from stream_models.device import set_torch_threads

    set_torch_threads(settings.runner.torch_threads)
    spec = parse_input(input_spec, settings.topics.labels)
    truth: dict[str, int] = {}
    if isinstance(spec, Path):
        source: Any = FileSource(spec, domain, columns=columns, topic=domain, **(file_options or {}))
        truth = source.labels_by_event_id
        total: int | None = len(source)
        topic = domain
    else:
        source = KafkaRangeSource(settings.kafka.bootstrap_servers, spec.topic, spec.start, spec.end, by=spec.by,
                                  config=_replay_config(settings))
        total = sum(max(0, end - start) for start, end in source.bounds().values()) if spec.by == "offset" else None
        topic = spec.topic
        if spec.labels_topic:
            truth = _kafka_labels(settings, spec.labels_topic)
    wrapped = DelayedLabels(source, {eid for eid, y in truth.items() if y == 1}, delay)
    processor = build_processor(settings, domain)
    bar, task = _progress(total, progress)
    log = ScoreLog(on_batch=(lambda n: bar.update(task, advance=n)) if bar else None)
    sink = MemorySink()
    dlq = ListDeadLetters()
    runner = Runner(
        wrapped, sink, dlq, {topic: processor}, labels_topic=wrapped.topic,
        config=RunnerConfig(max_records=max_records, poll_timeout_ms=1000, commit_interval_s=0.0, checkpoint_interval_s=0.0),
        observers=[log],
    )
    started = time.perf_counter()
    try:
        if bar:
            bar.start()
        stats = runner.run()
    finally:
        if bar:
            bar.stop()
        wrapped.close()
    elapsed = time.perf_counter() - started

    frame = log.frame({processor.domain: processor.detector_name})
    if truth and isinstance(spec, KafkaInput):
        frame["label"] = frame["event_id"].map(lambda e: truth.get(e, 0)).astype(float)  # unlabelled = genuine
    else:
        frame["label"] = frame["event_id"].map(truth).astype(float)
    rejects = [r for r in dlq.rejects if r.record.topic == topic]  # not the (generated) labels
    result = BacktestResult(frame, list(sink.alerts), stats, len(dlq.rejects), wrapped.revealed)
    result.problem = find_problem(stats.events, rejects, settings.backtest.max_reject_share, _selection(spec, source))
    if result.problem is None and domain == "sensors" and len(frame) and not frame["score"].notna().any():
        result.problem = unscored_sensors(frame, settings.model("sensors").window)
    if report_dir is not None:
        from evaluation.report import all_metrics, write_report

        summary = {
            "input": input_spec, "domain": domain, "events": stats.events, "rejects": len(dlq.rejects),
            "reject reasons": ", ".join(f"{k}: {n}" for k, n in Counter(r.reason.value for r in rejects).most_common())
            or "–",
            "problem": result.problem or "–",
            "alerts": len(sink.alerts), "labels revealed": wrapped.revealed, "label delay (s)": delay,
            "champion": processor.detector_name, "challengers": ", ".join(model.challengers) or "–",
            "wall time (s)": round(elapsed, 2), "events/s": round(stats.events / elapsed, 1) if elapsed else None,
        }
        window: dict[str, Any] = {"evaluate_from": evaluate_from, "evaluate_to": evaluate_to, "known_entity_days": known_entity_days,
                  "label_delay_s": delay, "period": period}
        result.report = write_report(frame, Path(report_dir), summary=summary, k=settings.backtest.precision_k,
                                     **window)
        result.metrics = [m.row() for m in all_metrics(frame, k=settings.backtest.precision_k, after_warmup=True,
                                                       **window)]
    return result


def _selection(spec: Path | KafkaInput, source: Any) -> str:
    """What a date-time range left out of the input, for the message of a backtest that scored nothing."""
    if isinstance(spec, KafkaInput) and spec.by == "event_time":
        return f"{source.skipped} record(s) of {spec.topic} left out: ts outside [from, to)"
    if isinstance(spec, KafkaInput) and spec.by == "timestamp":
        return "time=broker selects by when the records were produced; leave it out to select by the events' ts"
    return ""


def _progress(total: int | None, enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return bar, bar.add_task("events", total=total)
