"""The worker loop: poll, decode, featurise + score + threshold, alert, learn, flush, commit, checkpoint.

The runner makes no Kafka or Redis calls of its own: its source, sink and dead-letter queue are
injected, so the live worker (BatchConsumer + RedisAlertSink + DeadLetterQueue) and the backtest
(replay source + MemorySink) run this very code. Per-domain model work lives behind
`DomainProcessor` (the stream engine, stream_models.engine).

Delivery: offsets are committed as last + 1 per partition, only after `sink.flush()` and
`dlq.flush()` succeeded. A retriable flush failure (SinkUnavailable) pauses the assigned
partitions and retries with exponential backoff; nothing is committed past unflushed alerts.

Uncommitted progress is never built upon twice: when the consumer reports partitions lost (its
membership expired, e.g. during a broker outage longer than the session timeout) or a revoke's
commit fails, the runner discards what it processed since the last checkpoint (or, with a
partition-state store, since the partitions' last saved state) and seeks back, so the replay gives
every event the score of an uninterrupted run.

Partition handover (with a `PartitionStateStore`): on revoke, after flush + commit, each leaving
partition's entity state is saved at its committed offset and dropped; on assign, each arriving
partition's saved state is merged in and the partition seeks to the saved offset; every checkpoint
also saves the assigned partitions' states.
"""

from __future__ import annotations

import copy
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.collector import freeze_long_lived
from pipeline.errors import CheckpointMismatch
from pipeline.observability import RunnerMetrics
from stream_models.engine import DomainBatch
from stream_models.learner import learning_in_flight
from streamwarden.errors import StreamwardenError

log = logging.getLogger("pipeline.runner")

CHECKPOINT_FORMAT = 1
LAG_EXPORT_INTERVAL_S = 5.0  # each refresh of the lag metric asks the broker for the log ends, on the consuming thread
TopicPartition = tuple[str, int]


class DomainProcessor(Protocol):
    """Per-domain features, detector(s), threshold and learner: stream_models.engine.StreamEngine."""

    @property
    def domain(self) -> str: ...

    @property
    def detector_name(self) -> str:
        """The champion: the detector whose flags become alerts (part of the alert id)."""
        ...

    @property
    def model_version(self) -> str: ...

    def process(self, events: Sequence[Any]) -> DomainBatch: ...

    def apply_labels(self, labels: Sequence[Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PartitionedProcessor(DomainProcessor, Protocol):
    """A processor whose entity state can move partition by partition (needed with a partition-state store)."""

    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]: ...

    def restore_partition(self, state: dict[str, Any]) -> None: ...

    def drop_partition(self, partition: int, n_partitions: int) -> None: ...


class Source(Protocol):
    """BatchConsumer or a replay source; pause/resume/assignment/seek/lag are used when present."""

    def poll(self, max_records: int, timeout_ms: int) -> list[Any]: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class Sink(Protocol):
    """Alert sink or dead-letter queue: `add` buffers, `flush` delivers or raises (retriable or not)."""

    def add(self, items: Sequence[Any], /) -> None: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class RunnerConfig:
    max_records: int = 2000
    poll_timeout_ms: int = 500
    commit_interval_s: float = 1.0
    checkpoint_interval_s: float = 60.0  # 0 = only at shutdown
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    flush_alerts_every_batch: bool = True  # False: alerts wait for the next commit (fewer Redis calls)
    freeze_gc: bool = True  # gc.freeze() before the loop: no long collector pauses over startup objects
    checkpoint_path: Path | None = None
    idle_timeout_s: float | None = None  # stop after this long without records (None: run until stopped)
    max_events: int | None = None  # stop after this many records (tests, demos)


@dataclass
class RunStats:
    records: int = 0
    events: int = 0
    rejects: int = 0
    alerts: int = 0
    labels: int = 0
    batches: int = 0
    commits: int = 0
    checkpoints: int = 0
    rewinds: int = 0  # times uncommitted progress was discarded (lost partitions, failed revoke commits)
    partitions_saved: int = 0
    partitions_restored: int = 0
    restored_from: dict[TopicPartition, int] | None = None
    warming_up: dict[str, bool] = field(default_factory=dict)  # domain -> newest event scored without alerts armed
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.stopped_at or time.time()) - self.started_at


Observer = Callable[[str, Sequence[Any], Sequence[Any], DomainBatch], None]  # domain, events, records, batch


class Runner:
    """One worker. `run()` loops until stopped (SIGTERM/SIGINT, `request_stop()`, idle, exhausted replay)."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        dlq: Sink,
        processors: Mapping[str, DomainProcessor],  # topic -> processor
        *,
        labels_topic: str | None = None,
        config: RunnerConfig | None = None,
        metrics: RunnerMetrics | None = None,
        observers: Iterable[Observer] = (),
        checkpoint_meta: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] | None = None,  # default: a wait that request_stop() cuts short
        partition_store: Any = None,
        partition_count: Callable[[str], int] | None = None,
    ) -> None:
        """`partition_store` (a pipeline.partition_state.PartitionStateStore) turns on partition handover;
        `partition_count(topic)` then gives the topic's partition count (entities are mapped to partitions
        with Kafka's default partitioner)."""
        self.source, self.sink, self.dlq = source, sink, dlq
        self.processors = dict(processors)
        self.labels_topic = labels_topic
        self.config = config or RunnerConfig()
        self.metrics = metrics or RunnerMetrics()
        self.observers = list(observers)
        self.checkpoint_meta = checkpoint_meta or {}
        self.stats = RunStats()
        self._stop = threading.Event()
        self.clock, self.sleep = clock, sleep or self._stop.wait
        self._finishing = False  # the loop ended (idle, max events, stop): a failing flush is not retried
        self._poll_failing_since: float | None = None
        self._rebalances = 0  # rebalance callbacks seen: a rebalance resets the idle clock
        self._next: dict[TopicPartition, int] = {}  # processed, not yet committed: partition -> last + 1
        self._committed: dict[TopicPartition, int] = {}
        self._stash: list[Any] = []  # records polled while paused, processed before the next poll
        self._poll_delay = self.config.backoff_initial_s
        self._last_commit = self.clock()
        self._last_checkpoint = self.clock()
        self._last_lag_export = -float("inf")
        self._pending_seek: dict[TopicPartition, int] = {}
        self._in_callback = False  # inside a rebalance callback: never poll from there
        self.checkpoint_hooks: list[Callable[[Runner], None]] = []  # run at each checkpoint boundary
        self.start_hooks: list[Callable[[Runner], None]] = []  # run once, after restore, before the first poll
        self.partition_store = partition_store
        self.partition_count = partition_count
        if partition_store is not None and partition_count is None:
            raise ValueError("a partition_store needs partition_count(topic)")
        self._n_partitions: dict[str, int] = {}
        # Rewind point: the state of the last checkpoint (or the fresh state) and the offsets it matches.
        self._origin: dict[TopicPartition, int] = {}
        self._fresh_state: dict[str, Any] | None = None
        self._writer: Any = None  # stream_models.checkpoint.BackgroundWriter, made at the first checkpoint

    # ------------------------------------------------------------------ control
    def request_stop(self, *_: Any) -> None:
        """Finish the current batch, flush, commit, checkpoint, return. Safe from signal handlers."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    # ------------------------------------------------------------------ loop
    def run(self) -> RunStats:
        if self.restore() is None and self._fresh_state is None:
            self._fresh_state = {p.domain: copy.deepcopy(p.state_dict()) for p in self.processors.values()}
        for hook in self.start_hooks:
            hook(self)
        # Idle time is the time spent in polls that returned nothing, each counted up to the poll timeout
        # plus a second: a process frozen inside a poll (SIGSTOP, a VM pause) is not idle, and the
        # rebalance it missed shows up in the polls after it thaws.
        idle_s, last = 0.0, self.clock()
        poll_cap_s = self.config.poll_timeout_ms / 1000.0 + 1.0
        rebalances_seen = self._rebalances
        clean = False
        if self.config.freeze_gc:
            # What exists now (imported modules, models) lives as long as the worker: hidden from the cyclic
            # collector, a full collection no longer walks ~0.5 M startup objects (a 200 ms pause here).
            freeze_long_lived()
        # a domain whose features come from its first events (sensors) builds its models in its first batch
        models_frozen = not self.config.freeze_gc or self._models_built()
        try:
            while not self._stop.is_set():
                n = self.step()
                if n and not models_frozen and self._models_built():
                    # those models and the torch modules they import (~140,000 objects) are hidden from the
                    # collector too, or every full collection walks them (~150 ms, every few seconds)
                    freeze_long_lived()
                    models_frozen = True
                now = self.clock()
                gap, last = now - last, now
                if self._stop.is_set():
                    break
                if n or self._waiting_for_partitions() or self._rebalances != rebalances_seen:
                    # idle time counts only while partitions are ours and the group is settled
                    idle_s, rebalances_seen = 0.0, self._rebalances
                elif getattr(self.source, "exhausted", False):
                    break
                else:
                    idle_s += min(gap, poll_cap_s)
                    if self.config.idle_timeout_s is not None and idle_s >= self.config.idle_timeout_s:
                        break
                if self.config.max_events is not None and self.stats.records >= self.config.max_events:
                    break
                if now - self._last_commit >= self.config.commit_interval_s:
                    self.commit()
            clean = True
        finally:
            self._finishing = True
            if self.config.freeze_gc:
                gc.unfreeze()
            self.shutdown(clean)
        return self.stats

    def _models_built(self) -> bool:
        """Whether every domain's models exist (a domain builds them once it knows its features)."""
        return all(p.detectors() for p in self.processors.values() if hasattr(p, "detectors"))

    def step(self) -> int:
        """Process one polled batch; returns the number of records."""
        if self._stash:
            records, self._stash = self._stash, []
        else:
            records = self._poll()
        if not records:
            return 0
        started = time.perf_counter()
        self.process(records)
        if self.config.flush_alerts_every_batch:
            self._flush_alerts_early()
        self.metrics.batch_latency.observe(time.perf_counter() - started)
        self.stats.batches += 1
        return len(records)

    def _flush_alerts_early(self) -> None:
        """Alerts go to Redis after the batch that raised them, not at the next commit. Always safe: offsets
        are still committed only after a flush, and a replayed alert is deduplicated. A retriable failure is
        left to the commit, which pauses and backs off."""
        if not getattr(self.sink, "pending", 0):
            return
        try:
            self.sink.flush()
        except StreamwardenError as exc:
            if not exc.retriable:
                raise
            log.debug("early alert flush failed; the commit retries it", extra={"error": str(exc)})

    def _poll(self) -> list[Any]:
        """One poll; a retriable broker error (e.g. a reconnect refused while Kafka restarts) is logged and
        answered with an empty batch after a backoff, so the worker outlives broker restarts."""
        try:
            records = self.source.poll(self.config.max_records, self.config.poll_timeout_ms)
        except StreamwardenError as exc:
            if not exc.retriable:
                raise
            self.metrics.poll_retries.inc()
            if self._poll_failing_since is None:
                self._poll_failing_since = self.clock()
                log.warning("Kafka unreachable: polling paused, retrying with backoff", extra={"error": str(exc)})
            self.sleep(self._poll_delay)
            self._poll_delay = min(self._poll_delay * 2, self.config.backoff_max_s)
            return []
        if self._poll_failing_since is not None:
            log.info("Kafka reachable again", extra={"outage_s": round(self.clock() - self._poll_failing_since, 1)})
            self._poll_failing_since = None
        self._poll_delay = self.config.backoff_initial_s
        return list(records)

    def process(self, records: Sequence[Any]) -> None:
        """Decode, score, alert and learn one batch; offsets become committable at the end."""
        from ingest.decode import decode_batch

        by_topic: dict[str, list[Any]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        # Labels first: a label polled with events is already known, and an event whose label delay ends
        # inside this batch must meet its label before it matures as "genuine".
        if self.labels_topic in by_topic:
            result = decode_batch(by_topic.pop(self.labels_topic), "labels")
            self._reject(result.rejects, "labels")
            if result.events:
                for processor in self.processors.values():
                    processor.apply_labels(result.events)
                self.stats.labels += len(result.events)
                self.metrics.labels_in.inc(len(result.events))
        for topic, topic_records in by_topic.items():
            processor = self.processors.get(topic)
            if processor is None:
                log.warning("records from unexpected topic skipped", extra={"topic": topic, "count": len(topic_records)})
                continue
            result = decode_batch(topic_records, processor.domain)
            self._reject(result.rejects, processor.domain)
            if result.events:
                self._score(processor, result.events, result.records)
        for record in records:
            tp = (record.topic, record.partition)
            self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)
            self._origin.setdefault(tp, record.offset)  # first record since the rewind point
        self.stats.records += len(records)

    def _reject(self, rejects: Sequence[Any], domain: str) -> None:
        if not rejects:
            return
        self.dlq.add(rejects)
        self.stats.rejects += len(rejects)
        for reject in rejects:
            self.metrics.rejects.labels(domain=domain, reason=str(getattr(reject.reason, "value", reject.reason))).inc()

    def _score(self, processor: DomainProcessor, events: Sequence[Any], records: Sequence[Any]) -> None:
        from sinks.alert import Alert, episode_end_alert, make_alert_id, over_budget_alert

        drifts_before = getattr(processor, "drift_events", 0)
        batch = processor.process(events)
        self.metrics.drift_events.labels(domain=processor.domain).inc(getattr(processor, "drift_events", 0) - drifts_before)
        for name, loss in getattr(processor, "losses", {}).items():
            self.metrics.model_loss.labels(domain=processor.domain, detector=name).set(loss)
        now = self.clock()

        def alert(i: int, **extra: Any) -> Alert:
            event = events[i]
            detector, score, threshold = batch.verdict(i)
            self.metrics.event_to_alert.labels(domain=processor.domain).observe(max(0.0, now - float(event.ts)))
            return Alert(
                alert_id=make_alert_id(event.event_id, detector or processor.detector_name, processor.model_version),
                event_id=event.event_id, entity=batch.keys[i], domain=processor.domain, score=score,
                threshold=threshold, model_version=processor.model_version, event_ts=float(event.ts), alert_ts=now,
                top_features=[(str(n), float(v)) for n, v in batch.explanations.get(int(i), [])],
                reason=batch.reasons.get(i),
                warming_up=bool(batch.warming_up[i]) if batch.warming_up is not None else False, **extra)

        alerts = [] if batch.per_episode else [alert(i) for i in np.flatnonzero(batch.flags).tolist()]
        for i, kind, episode in batch.episodes:
            if kind == "open":
                alerts.append(alert(i, episode="open", episode_start_ts=episode.start_ts, episode_rows=1))
            else:
                alerts.append(episode_end_alert(processor.domain, batch.keys[i], kind, episode, processor.model_version,
                                                now))
        for i in batch.over_budget:
            alerts.append(over_budget_alert(processor.domain, float(events[i].ts), processor.config.alert_budget_per_minute,
                                            processor.model_version, now))
        self.metrics.held_back.labels(domain=processor.domain).inc(batch.held_back)
        if alerts:
            self.sink.add(alerts)
        self.stats.events += len(events)
        self.stats.alerts += len(alerts)
        self.metrics.events_in.labels(domain=processor.domain).inc(len(events))
        self.metrics.alerts.labels(domain=processor.domain).inc(len(alerts))
        self.metrics.suppressed.labels(domain=processor.domain).inc(int(np.count_nonzero(batch.suppressed)))
        if batch.warming_up is not None and len(events):
            self._warm_up_state(processor, bool(batch.warming_up[-1]))
        for observer in self.observers:
            observer(processor.domain, events, records, batch)

    def _warm_up_state(self, processor: DomainProcessor, warming: bool) -> None:
        """Log and export when a domain starts or stops raising alerts (warm-up, threshold re-learning)."""
        before = self.stats.warming_up.get(processor.domain)
        self.stats.warming_up[processor.domain] = warming
        self.metrics.warming_up.labels(domain=processor.domain).set(int(warming))
        where = {"domain": processor.domain, "events": getattr(processor, "events_seen", None)}
        if before is None and warming:
            log.info("warming up: no alerts until the threshold is armed", extra=where)
        elif before and not warming:
            log.info("alerts armed", extra={**where, "detector": processor.detector_name})
        elif before is False and warming:
            log.info("alerts paused: the champion's threshold is not armed (a new champion's, still learning)",
                     extra={**where, "detector": processor.detector_name})

    # ------------------------------------------------------------------ delivery
    def _flush_with_backoff(self) -> bool:
        """Flush sink then DLQ; on retriable errors pause partitions and retry. False when it gave up: stopping,
        finishing, or failing for longer than the idle timeout (the unflushed batches stay uncommitted and are
        redelivered). Logs one line when delivery starts failing and one when it recovers."""
        delay = self.config.backoff_initial_s
        paused: list[Any] = []
        source: Any = self.source  # pause/resume are optional on sources
        failing_since: float | None = None
        try:
            while True:
                try:
                    self.sink.flush()
                    self.dlq.flush()
                    self.metrics.dead_letters_dropped.set(getattr(self.dlq, "undeliverable", 0))
                    if failing_since is not None:
                        log.info("alert delivery recovered, partitions resumed",
                                 extra={"outage_s": round(self.clock() - failing_since, 1)})
                    return True
                except StreamwardenError as exc:
                    if not exc.retriable:
                        raise
                    if not paused and hasattr(self.source, "pause"):
                        paused = list(self._assignment())
                        if paused:
                            source.pause(paused)
                    self.metrics.sink_retries.inc()
                    if failing_since is None:
                        failing_since = self.clock()
                        log.warning("alert delivery failing: partitions paused, retrying with backoff",
                                    extra={"error": str(exc)})
                    if self._stop.is_set() or self._finishing:
                        log.warning("stopping with undelivered alerts: their records stay uncommitted and are "
                                    "processed again at the next start")
                        return False
                    idle = self.config.idle_timeout_s
                    if idle is not None and self.clock() - failing_since >= idle:
                        log.warning("idle timeout passed while alert delivery was failing: stopping")
                        self._stop.set()
                        return False
                    self.sleep(delay)
                    delay = min(delay * 2, self.config.backoff_max_s)
                    if paused and not self._in_callback:
                        # Keeps the consumer in its group; paused partitions return nothing.
                        self._stash.extend(self.source.poll(self.config.max_records, 0))
        finally:
            if paused:
                source.resume(paused)

    def _waiting_for_partitions(self) -> bool:
        """A group member without partitions yet (e.g. while the group waits out a dead member's session)."""
        return callable(getattr(self.source, "assignment", None)) and not self._assignment()

    def _export_lag(self) -> None:
        lag = getattr(self.source, "lag", None)
        if not callable(lag) or self._in_callback or self.clock() - self._last_lag_export < LAG_EXPORT_INTERVAL_S:
            return
        self._last_lag_export = self.clock()
        try:
            for (topic, partition), behind in lag().items():
                self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(behind)
        except StreamwardenError as exc:  # lag is informative only
            log.debug("lag unavailable", extra={"error": str(exc)})

    def _assignment(self) -> Iterable[Any]:
        assignment = getattr(self.source, "assignment", None)
        return assignment() if callable(assignment) else ()

    def commit(self) -> bool:
        """Flush sinks, then commit last + 1 per partition; checkpoint when due. False if flushing failed."""
        if not self._flush_with_backoff():
            return False
        pending = {tp: off for tp, off in self._next.items() if self._committed.get(tp) != off}
        if pending:
            path = self.config.checkpoint_path
            if path is not None and not path.exists():
                # Never commit past the start of a state nobody saved: a worker killed before its first
                # checkpoint would otherwise restart with fresh state from the committed offsets.
                self.checkpoint()
            try:
                self.source.commit(pending)
            except StreamwardenError as exc:
                # Retriable: the same offsets go with the next commit. Otherwise the group moved the
                # partitions away meanwhile; their records are redelivered to the new owner.
                log.warning("commit failed", extra={"error": str(exc), "retriable": exc.retriable})
                if not exc.retriable:
                    assigned = {(str(t), int(p)) for t, p in self._assignment()}
                    self._next = {tp: off for tp, off in self._next.items() if tp in assigned}
                return False
            self._committed.update(pending)
            self.stats.commits += 1
            self.metrics.commits.inc()
            self._export_lag()
        self._last_commit = self.clock()
        interval = self.config.checkpoint_interval_s
        since = self.clock() - self._last_checkpoint
        # taken when the learning thread is between steps (the snapshot then needs no wait), or at the latest
        # min(interval, 10 s) late, after waiting for the steps in flight
        if interval and since >= interval and (since >= interval + min(interval, 10.0) or not learning_in_flight()):
            self.checkpoint(wait=False)
        return True

    def shutdown(self, clean: bool = True) -> None:
        """Flush, commit and checkpoint; after an error only what completed batches produced is committed."""
        try:
            if self.commit() and clean:
                self.checkpoint()
        finally:
            self.stats.stopped_at = self.clock()

    # ------------------------------------------------------------------ partitions
    def on_assign(self, partitions: Iterable[Any]) -> None:
        """Consumer callback: seek arriving partitions to the offsets their state corresponds to.

        That is the restored checkpoint's (or a rewind's) offset, or, with a partition-state store, the
        offset the partition's saved state was taken at (its state is merged in first).
        """
        self._rebalances += 1
        parts = [(str(tp[0]), int(tp[1])) for tp in partitions]
        wanted = {tp: self._pending_seek.pop(tp) for tp in parts if tp in self._pending_seek}
        if self.partition_store is not None:
            wanted.update(self._load_partitions(parts))
        seek = getattr(self.source, "seek", None)
        if wanted and callable(seek):
            seek(wanted)
            log.info("seeked to the offsets of the restored state",
                     extra={"offsets": {f"{t}[{p}]": o for (t, p), o in wanted.items()}})

    def on_revoke(self, partitions: Iterable[Any]) -> None:
        """Consumer callback: flush and commit before partitions move to another worker, then forget them.

        With a partition-state store, each leaving partition's state is saved at its committed offset
        and dropped. When the commit fails, the uncommitted progress is discarded instead (see on_lost).
        """
        self._rebalances += 1
        parts = [(str(tp[0]), int(tp[1])) for tp in partitions]
        self._in_callback = True
        try:
            committed = self.commit()
        finally:
            self._in_callback = False
        if not committed:
            self._discard_uncommitted(parts, "revoked before their offsets could be committed")
            return
        if self.partition_store is not None:
            self._save_partitions(parts)
            for tp in parts:
                self._drop_partition(tp)
        for tp in parts:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def on_lost(self, partitions: Iterable[Any]) -> None:
        """Consumer callback: the group membership expired and `partitions` are no longer ours.

        Nothing can be committed any more; whatever was processed past the committed offsets is
        redelivered, so the in-memory progress on those records is discarded first.
        """
        self._rebalances += 1
        self._discard_uncommitted([(str(tp[0]), int(tp[1])) for tp in partitions], "lost")

    def _discard_uncommitted(self, parts: list[TopicPartition], why: str) -> None:
        self.stats.rewinds += 1
        gone = set(parts)
        self._stash = [r for r in self._stash if (r.topic, r.partition) not in gone]
        if self.partition_store is not None:
            # Their state comes back from the store (at its saved offset) if they are assigned again.
            for tp in parts:
                self._drop_partition(tp)
                self._next.pop(tp, None)
                self._committed.pop(tp, None)
                self._pending_seek.pop(tp, None)
            log.warning("partitions %s, their uncommitted state dropped", why,
                        extra={"partitions": [f"{t}[{p}]" for t, p in parts]})
            return
        target = self._rewind_state()
        self._next, self._committed = dict(target), dict(target)
        assigned = {(str(t), int(p)) for t, p in self._assignment()} - gone
        now = {tp: off for tp, off in target.items() if tp in assigned}
        self._pending_seek.update({tp: off for tp, off in target.items() if tp not in assigned})
        seek = getattr(self.source, "seek", None)
        if now and callable(seek):
            seek(now)
        self._stash = [r for r in self._stash if (r.topic, r.partition) not in now]
        log.warning("partitions %s: state rewound to the last checkpoint, replaying from its offsets", why,
                    extra={"partitions": [f"{t}[{p}]" for t, p in parts],
                           "offsets": {f"{t}[{p}]": o for (t, p), o in target.items()}})

    def _rewind_state(self) -> dict[TopicPartition, int]:
        """Load the last checkpoint (else the fresh state); returns the offsets that state corresponds to."""
        path = self.config.checkpoint_path
        if path is not None and path.exists():
            self._load_checkpoint(path)
        elif self._fresh_state is not None:
            for processor in self.processors.values():
                processor.load_state_dict(copy.deepcopy(self._fresh_state[processor.domain]))
        return dict(self._origin)

    def _partitioned(self, tp: TopicPartition) -> tuple[Any, int] | None:
        """(processor, partition count) when `tp` belongs to a processor's topic."""
        processor = self.processors.get(tp[0])
        if processor is None or self.partition_count is None:
            return None
        if tp[0] not in self._n_partitions:
            self._n_partitions[tp[0]] = int(self.partition_count(tp[0]))
        return processor, self._n_partitions[tp[0]]

    def _save_partitions(self, parts: Iterable[TopicPartition]) -> None:
        """Save the state of each partition whose in-memory state matches its committed offset."""
        from pipeline.partition_state import PartitionStateError

        for tp in parts:
            found = self._partitioned(tp)
            offset = self._committed.get(tp)
            if found is None or offset is None or self._next.get(tp, offset) != offset:
                continue
            processor, n = found
            try:
                self.partition_store.save(tp, processor.snapshot_partition(tp[1], n), offset)
            except PartitionStateError as exc:
                # The stored (state, offset) pair stays the older one: its next owner just replays more.
                log.warning("partition state not saved", extra={"topic": tp[0], "partition": tp[1], "error": str(exc)})
                continue
            self.stats.partitions_saved += 1

    def _drop_partition(self, tp: TopicPartition) -> None:
        found = self._partitioned(tp)
        if found is not None:
            processor, n = found
            processor.drop_partition(tp[1], n)

    def _load_partitions(self, parts: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Merge each arriving partition's saved state; returns {partition: offset to seek to}."""
        from pipeline.partition_state import PartitionStateError

        seek: dict[TopicPartition, int] = {}
        for tp in parts:
            found = self._partitioned(tp)
            if found is None:
                continue
            try:
                saved = self.partition_store.load(tp)
            except PartitionStateError:
                log.exception("unreadable partition state ignored; the partition starts from empty state",
                              extra={"topic": tp[0], "partition": tp[1]})
                continue
            if saved is None:
                continue
            state, offset = saved
            processor, n = found
            processor.drop_partition(tp[1], n)  # whatever an older checkpoint held for it
            processor.restore_partition(state)
            self._next[tp] = self._committed[tp] = offset
            seek[tp] = offset
            self.stats.partitions_restored += 1
        return seek

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, wait: bool = True) -> Path | None:
        """Write model/feature/threshold/drift state plus the committed offsets atomically. With `wait` False the
        loop goes on at once: a forked child saves a copy-on-write snapshot (on CUDA, where a child cannot read the
        state, the state is copied now and a background thread writes it)."""
        for hook in self.checkpoint_hooks:
            hook(self)
        if self.partition_store is not None:
            self._save_partitions([(str(t), int(p)) for t, p in self._assignment()])
        path = self.config.checkpoint_path
        self._last_checkpoint = self.clock()
        if path is None:
            return None
        from stream_models import checkpoint
        from stream_models.learner import wait_for_learning

        offsets = {(str(t), int(p)): int(o) for (t, p), o in self._next.items()}
        head = {"format": CHECKPOINT_FORMAT, "created_at": self.clock(), "offsets": offsets}

        def payload() -> dict[str, Any]:
            return {
                **head,
                "domains": {p.domain: p.state_dict() for p in self.processors.values()},
                "models": {p.domain: {"detector": p.detector_name, "version": p.model_version}
                           for p in self.processors.values()},
                "meta": self.checkpoint_meta,
            }

        path.parent.mkdir(parents=True, exist_ok=True)
        if self._writer is None:
            self._writer = checkpoint.BackgroundWriter()
        if not wait and checkpoint.can_fork():
            wait_for_learning()  # the child has no learning thread: it must find the models between steps
            self._writer.submit_forked(path, payload)
        else:
            self._writer.submit(path, payload())
        if wait:
            self._writer.wait()
        self._origin = dict(offsets)
        self.stats.checkpoints += 1
        self.metrics.checkpoints.inc()
        log.info("checkpoint written" if wait else "checkpoint started", extra={"path": str(path),
                                                                                "partitions": len(offsets)})
        return path

    def restore(self) -> dict[TopicPartition, int] | None:
        """Load the checkpoint if there is one and arrange to replay from its offsets."""
        path = self.config.checkpoint_path
        if path is None or not path.exists():
            return None
        offsets = self._load_checkpoint(path)
        self._committed = dict(offsets)
        self._next = dict(offsets)
        self._pending_seek = dict(offsets)
        if self._assignment():
            self.on_assign(list(self._assignment()))
        self.stats.restored_from = offsets
        log.info("restored from checkpoint", extra={"path": str(path), "partitions": len(offsets)})
        return offsets

    def _load_checkpoint(self, path: Path) -> dict[TopicPartition, int]:
        """Load every processor's state from the checkpoint at `path`; returns its offsets."""
        from stream_models import checkpoint

        if self._writer is not None:
            self._writer.wait()
        payload = checkpoint.load(path)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatch(f"checkpoint {path} has format {payload.get('format')}, expected {CHECKPOINT_FORMAT}")
        states = payload["domains"]
        for processor in self.processors.values():
            if processor.domain not in states:
                raise CheckpointMismatch(
                    f"checkpoint {path} holds domains {sorted(states)}, not {processor.domain!r}; "
                    "use another runner.state_dir or delete the file"
                )
            try:
                processor.load_state_dict(states[processor.domain])
            except (KeyError, ValueError, RuntimeError, TypeError, StreamwardenError) as exc:
                raise CheckpointMismatch(
                    f"checkpoint {path} does not fit the configured {processor.domain} models ({exc}); "
                    "use another runner.state_dir or delete the file"
                ) from exc
        offsets = {(str(topic), int(partition)): int(value) for (topic, partition), value in payload["offsets"].items()}
        self._origin = dict(offsets)
        return offsets
