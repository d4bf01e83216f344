"""Model sync across workers: federated averaging through a compacted Kafka topic.

Every worker periodically publishes its detector's weights to a compacted topic, keyed by its
worker id, so the topic keeps the latest model of every worker. Each worker reads what its
peers publish and merges it into its own model with `stream_models.federated.merge_states`
(FedAvg weighted by events seen; the maths lives next to the models).
A worker that joins reads the topic from the beginning and starts from the merged model.

Message value (`stream_models.checkpoint.to_bytes`, read back with `weights_only=True`, never
unpickled): {"format", "worker_id", "model_version", "events_seen", "published_at", "state"}.
A message that is not plain data, belongs to another model version or architecture, disagrees
with its key, or holds non-finite weights is refused, logged and skipped.

`WorkerModelSync` does this for a runner: joined as a start hook (a fresh worker starts from the
peers' merged model), synced as a checkpoint hook (every `interval_s`, at a checkpoint boundary, so
the checkpoint holds the merged model), one compacted topic per domain and detector.

"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from stream_models import federated
from stream_models.federated import all_finite, merge_states
from streamwarden.errors import StreamwardenError

log = logging.getLogger("pipeline.model_sync")

MESSAGE_FORMAT = "streamwarden-model-sync"


class ModelSyncError(PipelineError):
    """A peer's model could not be used (unsafe, malformed, or another architecture)."""


def check_compatible(own: Mapping[str, Any], peer: Mapping[str, Any], exclude: Sequence[str] = ()) -> None:
    """Raise ModelSyncError unless `peer` has the same architecture as `own` (keys, shapes, dtypes)."""
    try:
        federated.check_compatible(own, peer, exclude)
    except federated.IncompatibleModels as exc:
        raise ModelSyncError(str(exc)) from exc


@dataclass(frozen=True)
class ModelSyncConfig:
    topic: str = "streamwarden.models"
    worker_id: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:8]}")
    model_version: str = "v1"
    exclude: tuple[str, ...] = ("optimizer",)  # top-level state keys never averaged
    max_message_bytes: int = 64 * 1024 * 1024
    min_compaction_lag_ms: int = 0
    segment_ms: int = 60_000  # small segments so compaction can drop superseded models soon
    poll_timeout_ms: int = 200


@dataclass(frozen=True)
class PeerModel:
    worker_id: str
    model_version: str
    events_seen: int
    published_at: float
    state: dict[str, Any]


# ------------------------------------------------------------------------------ wire format


def encode_model(worker_id: str, model_version: str, events_seen: int, state: Mapping[str, Any]) -> bytes:
    from stream_models.checkpoint import to_bytes

    return to_bytes({"format": MESSAGE_FORMAT, "worker_id": worker_id, "model_version": model_version,
                     "events_seen": int(events_seen), "published_at": time.time(), "state": dict(state)})


def decode_model(key: bytes | None, value: bytes, *, max_bytes: int = 64 * 1024 * 1024) -> PeerModel:
    """A peer model from one topic message; raises ModelSyncError for anything unsafe or malformed."""
    from stream_models.checkpoint import from_bytes
    from stream_models.errors import CheckpointError

    if len(value) > max_bytes:
        raise ModelSyncError(f"message of {len(value)} bytes exceeds {max_bytes}")
    try:
        msg = from_bytes(value, source="model sync message")
    except CheckpointError as exc:
        raise ModelSyncError(str(exc)) from exc
    if msg.get("format") != MESSAGE_FORMAT:
        raise ModelSyncError(f"not a {MESSAGE_FORMAT} message")
    worker_id, version, events = msg.get("worker_id"), msg.get("model_version"), msg.get("events_seen")
    if not isinstance(worker_id, str) or key is None or key.decode("utf-8", "replace") != worker_id:
        raise ModelSyncError(f"worker_id {worker_id!r} does not match the message key {key!r}")
    if not isinstance(version, str):
        raise ModelSyncError(f"model_version must be a str, got {type(version).__name__}")
    if isinstance(events, bool) or not isinstance(events, int) or events < 0:
        raise ModelSyncError(f"events_seen must be an int >= 0, got {events!r}")
    state = msg.get("state")
    if not isinstance(state, dict):
        raise ModelSyncError("state must be a dict")
    if not all_finite(state):
        raise ModelSyncError(f"model of {worker_id} holds NaN or infinite weights")
    published = msg.get("published_at")
    if not isinstance(published, float) or not math.isfinite(published):
        raise ModelSyncError("published_at must be a finite float")
    return PeerModel(worker_id, version, events, published, state)


# ------------------------------------------------------------------------------ the Kafka side


class ModelSync:
    """Publish this worker's model to the compacted topic; read and merge the peers' models.

    `client_config` passes kafka-python settings (security, SASL/SSL) to the producer, consumer and
    admin client. `sync(detector, events_seen)` is one round: publish own model, read peers, merge.
    """

    def __init__(self, bootstrap_servers: str, config: ModelSyncConfig | None = None, *,
                 client_config: Mapping[str, Any] | None = None) -> None:
        from ingest.consumer import BatchConsumer
        from ingest.producer import EventProducer

        self.config = config or ModelSyncConfig()
        self.bootstrap_servers = bootstrap_servers
        self.client_config = dict(client_config or {})
        self.client_config.pop("bootstrap_servers", None)
        self.ensure_topic()
        self.producer = EventProducer(bootstrap_servers, client_id=f"model-sync-{self.config.worker_id}",
                                      config={**self.client_config,
                                              "max_request_size": self.config.max_message_bytes})
        # A group of its own: this worker reads every message from the start, and commits nothing.
        self.consumer = BatchConsumer(
            bootstrap_servers, self.config.topic, f"model-sync-{self.config.worker_id}-{uuid.uuid4().hex[:8]}",
            client_id=f"model-sync-{self.config.worker_id}", auto_offset_reset="earliest",
            config={**self.client_config, "fetch_max_bytes": self.config.max_message_bytes,
                    "max_partition_fetch_bytes": self.config.max_message_bytes})
        self.peers: dict[str, PeerModel] = {}
        self.rejected = 0
        self.published = 0

    def ensure_topic(self) -> None:
        """Create the compacted topic (one partition keeps every model in one ordered log)."""
        from ingest.consumer import create_topics

        create_topics(self.bootstrap_servers, {self.config.topic: 1}, topic_configs={
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": str(self.config.min_compaction_lag_ms),
            "segment.ms": str(self.config.segment_ms),
            "max.message.bytes": str(self.config.max_message_bytes),
        }, config=self.client_config)

    def publish(self, state: Mapping[str, Any], events_seen: int) -> None:
        """Send this worker's model (key = worker id) and wait until Kafka has it."""
        value = encode_model(self.config.worker_id, self.config.model_version, events_seen, state)
        self.producer.send(self.config.topic, self.config.worker_id.encode(), value)
        self.producer.flush()
        self.published += 1
        self.peers.pop(self.config.worker_id, None)  # an earlier run of this worker is superseded

    def poll(self, timeout_ms: int | None = None) -> int:
        """Read what peers published since the last call; returns the number of messages read."""
        records = self.consumer.poll(500, self.config.poll_timeout_ms if timeout_ms is None else timeout_ms)
        for record in records:
            self._accept(record.key, record.value)
        return len(records)

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Read the topic up to its current end (a worker joining: every peer's latest model)."""
        deadline = time.monotonic() + timeout_s
        read = 0
        while time.monotonic() < deadline:
            read += self.poll()
            if self.consumer.assignment():
                ends = self.consumer.end_offsets()
                if all(self.consumer.positions().get(tp, -1) >= end for tp, end in ends.items()):
                    return read
        raise ModelSyncError(f"could not read {self.config.topic} to its end within {timeout_s:.0f} s")

    def _accept(self, key: bytes | None, value: bytes) -> None:
        if not value:
            return  # a tombstone: a worker left for good
        try:
            peer = decode_model(key, value, max_bytes=self.config.max_message_bytes)
        except ModelSyncError as exc:
            self.rejected += 1
            log.warning("model sync message refused: %s", exc, extra={"topic": self.config.topic, "key": repr(key)})
            return
        if peer.worker_id == self.config.worker_id and self.published:
            return  # our own echo
        if peer.model_version != self.config.model_version:
            log.info("peer model of another version ignored", extra={"peer": peer.worker_id,
                                                                     "version": peer.model_version})
            return
        self.peers[peer.worker_id] = peer

    def merged(self, own_state: Mapping[str, Any], own_events: int) -> dict[str, Any]:
        """`own_state` averaged with every compatible peer model known so far."""
        usable: list[tuple[Mapping[str, Any], int]] = []
        for peer in self.peers.values():
            try:
                check_compatible(own_state, peer.state, self.config.exclude)
            except ModelSyncError as exc:
                self.rejected += 1
                log.warning("peer model of %s skipped: %s", peer.worker_id, exc)
                continue
            usable.append((peer.state, peer.events_seen))
        if not usable:
            return dict(own_state)
        return merge_states(own_state, own_events, usable, self.config.exclude)

    def adopt(self, detector: Any, events_seen: int, timeout_s: float = 30.0) -> int:
        """Read the topic to its end and load the merge of `detector` with every peer. Returns peers merged."""
        self.catch_up(timeout_s)
        if self.peers:
            detector.load_state_dict(self.merged(detector.state_dict(), events_seen))
        return len(self.peers)

    def sync(self, detector: Any, events_seen: int, timeout_s: float = 30.0) -> int:
        """One round: publish this worker's model, then adopt the merge with the peers'."""
        self.publish(detector.state_dict(), events_seen)
        return self.adopt(detector, events_seen, timeout_s)

    def join(self, detector: Any, timeout_s: float = 30.0) -> int:
        """A worker joining: read the whole topic and start from the peers' merged model."""
        return self.adopt(detector, 0, timeout_s)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


# ------------------------------------------------------------------------------ in the worker


@dataclass(frozen=True)
class WorkerModelSyncConfig:
    topic: str = "streamwarden.models"  # prefix: one topic per domain and detector, <topic>.<domain>.<detector>
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    interval_s: float = 60.0  # sync at the first checkpoint boundary this long after the last sync
    timeout_s: float = 30.0  # how long one round may wait to read the peers' models


class WorkerModelSync:
    """Model sync of every detector of a runner's processors (those with `detectors()` and `events_seen`).

    `start(runner)` is a runner start hook: a fresh worker joins (starts from its peers' merged model);
    one restored from a checkpoint adopts (merges, weighted by the events it has seen). Calling the
    object is a checkpoint hook: publish own models and merge the peers', once `interval_s` has passed.
    A failed round is logged and the worker goes on with its own model.
    """

    def __init__(self, bootstrap_servers: str, config: WorkerModelSyncConfig | None = None, *,
                 client_config: Mapping[str, Any] | None = None, clock: Any = time.monotonic) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.config = config or WorkerModelSyncConfig()
        self.client_config = dict(client_config or {})
        self.clock = clock
        self.syncs: dict[tuple[str, str], ModelSync] = {}
        self.rounds = 0
        self.failures = 0
        self._last: float | None = None

    def _detectors(self, runner: Any) -> list[tuple[ModelSync, Any, int]]:
        out = []
        for processor in runner.processors.values():
            detectors = getattr(processor, "detectors", None)
            if not callable(detectors):
                continue
            for name, detector in detectors().items():
                key = (processor.domain, name)
                if key not in self.syncs:
                    self.syncs[key] = ModelSync(self.bootstrap_servers, ModelSyncConfig(
                        topic=f"{self.config.topic}.{processor.domain}.{name}", worker_id=self.config.worker_id,
                        model_version=str(processor.model_version)), client_config=self.client_config)
                out.append((self.syncs[key], detector, int(getattr(processor, "events_seen", 0))))
        return out

    def start(self, runner: Any) -> None:
        """Runner start hook: begin from the peers' models."""
        restored = runner.stats.restored_from is not None
        try:
            for sync, detector, seen in self._detectors(runner):
                peers = sync.adopt(detector, seen, self.config.timeout_s) if restored else \
                    sync.join(detector, self.config.timeout_s)
                log.info("model sync: started from %d peer models", peers, extra={"topic": sync.config.topic})
        except StreamwardenError as exc:
            self.failures += 1
            log.warning("model sync: could not read the peers' models at start: %s", exc)
        self._last = self.clock()

    def __call__(self, runner: Any) -> None:
        if self._last is not None and self.clock() - self._last < self.config.interval_s:
            return
        self.sync(runner)

    def sync(self, runner: Any) -> int:
        """One round for every detector: publish own model, merge the peers'. Returns the peers merged."""
        self._last = self.clock()
        merged = 0
        try:
            for sync, detector, seen in self._detectors(runner):
                merged += sync.sync(detector, seen, self.config.timeout_s)
        except StreamwardenError as exc:
            self.failures += 1
            log.warning("model sync round failed, going on with the own model: %s", exc)
            return merged
        self.rounds += 1
        return merged

    def close(self) -> None:
        for sync in self.syncs.values():
            sync.close()
