"""Per-partition state checkpoints in a store every worker of a consumer group can reach.

When Kafka moves a partition from one worker to another, the new owner must continue with the
per-entity state (card histories, device windows) the old owner had built for that partition,
from the offset that state corresponds to. A `PartitionStateStore` keeps one record per
(group, topic, partition): the state as safe bytes (`stream_models.checkpoint.to_bytes`, read
back with `weights_only=True`, never unpickled) and the next offset to read.

Two backends:
- `RedisPartitionStateStore`: one key per partition, `<prefix><group>:<topic>:<partition>`,
  written with a single SET (atomic for readers);
- `DirectoryPartitionStateStore`: one file per partition in a shared directory, written to a
  temporary file and renamed (atomic on POSIX filesystems).

`pipeline.runner.Runner` uses a store natively (setting `state.store`): on revoke it saves the
state of each partition leaving the worker at the offset committed for it; on assign it loads the
state of each partition arriving, merges it into the worker's state and seeks the partition to its
offset; every checkpoint saves the assigned partitions. `PartitionStateHooks` packages the same
steps for a consumer loop other than the runner.

>>> import tempfile
>>> store = DirectoryPartitionStateStore(tempfile.mkdtemp(), group="workers")
>>> store.save(("transactions", 3), {"cards": ["c1"]}, 120)
>>> store.load(("transactions", 3))
({'cards': ['c1']}, 120)
>>> store.load(("transactions", 4)) is None
True
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline.partition_state")

TopicPartition = tuple[str, int]
PartitionState = tuple[dict[str, Any], int]  # (state, next offset to read)

RECORD_FORMAT = "streamwarden-partition-state"


class PartitionStateError(PipelineError):
    """A stored partition state is unreadable, unsafe, or belongs to another group/partition."""


class PartitionStateUnavailable(PartitionStateError):
    """The store cannot be reached right now (Redis down, shared directory unmounted)."""

    retriable = True


def _tp(tp: Iterable[Any]) -> TopicPartition:
    topic, partition = tp
    return str(topic), int(partition)


def encode_record(group: str, tp: TopicPartition, state: Mapping[str, Any], offset: int) -> bytes:
    """The stored bytes: plain data only (tensors, arrays, str, numbers, lists, dicts)."""
    from stream_models.checkpoint import to_bytes

    if int(offset) < 0:
        raise PartitionStateError(f"offset must be >= 0, got {offset}")
    topic, partition = _tp(tp)
    return to_bytes({
        "format": RECORD_FORMAT,
        "group": group,
        "topic": topic,
        "partition": partition,
        "offset": int(offset),
        "saved_at": time.time(),
        "state": dict(state),
    })


def decode_record(data: bytes, group: str, tp: TopicPartition, *, source: str) -> PartitionState:
    """Inverse of `encode_record`; refuses unsafe bytes and records of another group or partition."""
    from stream_models.checkpoint import from_bytes
    from stream_models.errors import CheckpointError

    try:
        record = from_bytes(data, source=source)
    except CheckpointError as exc:
        raise PartitionStateError(str(exc)) from exc
    topic, partition = _tp(tp)
    if record.get("format") != RECORD_FORMAT:
        raise PartitionStateError(f"{source} is not a partition state record")
    found = (record.get("group"), record.get("topic"), record.get("partition"))
    if found != (group, topic, partition):
        raise PartitionStateError(f"{source} holds the state of {found}, not of {(group, topic, partition)}")
    return record["state"], int(record["offset"])


class PartitionStateStore(ABC):
    """Where the per-partition states of one consumer group live. Subclasses give `_put/_get/_delete`."""

    def __init__(self, group: str) -> None:
        if not group:
            raise PartitionStateError("group must not be empty")
        self.group = group

    def save(self, tp: TopicPartition, state: Mapping[str, Any], offset: int) -> None:
        """Store `state`, which is the state after processing every record before `offset`."""
        tp = _tp(tp)
        data = encode_record(self.group, tp, state, offset)
        try:
            self._put(tp, data)
        except (OSError, ConnectionError) as exc:
            raise PartitionStateUnavailable(f"cannot save {self.describe(tp)}: {exc}") from exc

    def load(self, tp: TopicPartition) -> PartitionState | None:
        """(state, offset) saved for `tp`, or None when nothing was saved."""
        tp = _tp(tp)
        try:
            data = self._get(tp)
        except (OSError, ConnectionError) as exc:
            raise PartitionStateUnavailable(f"cannot read {self.describe(tp)}: {exc}") from exc
        if data is None:
            return None
        return decode_record(data, self.group, tp, source=self.describe(tp))

    def delete(self, tp: TopicPartition) -> None:
        self._delete(_tp(tp))

    def describe(self, tp: TopicPartition) -> str:
        return f"partition state {tp[0]}[{tp[1]}] of group {self.group!r}"

    @abstractmethod
    def _put(self, tp: TopicPartition, data: bytes) -> None: ...

    @abstractmethod
    def _get(self, tp: TopicPartition) -> bytes | None: ...

    @abstractmethod
    def _delete(self, tp: TopicPartition) -> None: ...


class DirectoryPartitionStateStore(PartitionStateStore):
    """One file per partition under `<root>/<group>/<topic>/<partition>.state` (temp file + rename)."""

    def __init__(self, root: str | os.PathLike[str], group: str) -> None:
        super().__init__(group)
        self.root = Path(root)

    def path(self, tp: TopicPartition) -> Path:
        topic, partition = _tp(tp)
        return self.root / quote(self.group, safe="") / quote(topic, safe="") / f"{partition}.state"

    def describe(self, tp: TopicPartition) -> str:
        return str(self.path(tp))

    def _put(self, tp: TopicPartition, data: bytes) -> None:
        import tempfile

        target = self.path(tp)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _get(self, tp: TopicPartition) -> bytes | None:
        try:
            return self.path(tp).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, tp: TopicPartition) -> None:
        self.path(tp).unlink(missing_ok=True)


@dataclass(frozen=True)
class RedisPartitionStateConfig:
    prefix: str = "streamwarden:partition-state:"
    ttl_s: int | None = None  # expire states nobody refreshed for this long (None: keep)


class RedisPartitionStateStore(PartitionStateStore):
    """One Redis key per partition: `<prefix><group>:<topic>:<partition>` -> record bytes."""

    def __init__(self, url: str | None = None, group: str = "streamwarden", *, client: Any = None,
                 connection: Any = None, config: RedisPartitionStateConfig | None = None) -> None:
        """`connection` (sinks.connection.RedisConfig) carries credentials and TLS; `url` overrides its URL."""
        super().__init__(group)
        from sinks.connection import resolve_client

        self.config = config or RedisPartitionStateConfig()
        self.client, self._owns_client = resolve_client(url, connection, client)

    def key(self, tp: TopicPartition) -> str:
        topic, partition = _tp(tp)
        return f"{self.config.prefix}{self.group}:{topic}:{partition}"

    def describe(self, tp: TopicPartition) -> str:
        return f"redis key {self.key(tp)}"

    def _put(self, tp: TopicPartition, data: bytes) -> None:
        from redis.exceptions import RedisError

        try:
            self.client.set(self.key(tp), data, ex=self.config.ttl_s)
        except RedisError as exc:
            raise ConnectionError(str(exc)) from exc

    def _get(self, tp: TopicPartition) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            value = self.client.get(self.key(tp))
        except RedisError as exc:
            raise ConnectionError(str(exc)) from exc
        return None if value is None else bytes(value)

    def _delete(self, tp: TopicPartition) -> None:
        self.client.delete(self.key(tp))

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def open_store(location: str | os.PathLike[str], group: str) -> PartitionStateStore:
    """A Redis store for `redis://`, `rediss://` and `unix://` URLs, else a directory store."""
    text = os.fspath(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisPartitionStateStore(text, group)
    return DirectoryPartitionStateStore(text, group)


class PartitionStateHooks:
    """The rebalance hooks a worker wires to its consumer, around its own state.

    - `snapshot(tp) -> state`: the worker's state of one partition (e.g. the cards hashed to it);
    - `restore(tp, state)`: merge a partition's state into the worker's state;
    - `forget(tp)`: drop a partition's state once it has been saved;
    - `offset(tp) -> int | None`: the next offset of `tp` the worker has committed (None: nothing).

    `on_revoke` saves each leaving partition (after the worker flushed and committed it);
    `on_assign` restores each arriving partition and returns `{tp: offset}` to seek to.
    """

    def __init__(self, store: PartitionStateStore, snapshot: Callable[[TopicPartition], Mapping[str, Any]],
                 restore: Callable[[TopicPartition, dict[str, Any]], None],
                 offset: Callable[[TopicPartition], int | None],
                 forget: Callable[[TopicPartition], None] | None = None) -> None:
        self.store = store
        self._snapshot, self._restore, self._offset, self._forget = snapshot, restore, offset, forget
        self.saved = 0
        self.restored = 0

    def save(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in map(_tp, partitions):
            offset = self._offset(tp)
            if offset is None:
                continue
            self.store.save(tp, self._snapshot(tp), offset)
            self.saved += 1

    def on_revoke(self, partitions: Iterable[TopicPartition]) -> None:
        parts = [_tp(tp) for tp in partitions]
        self.save(parts)
        if self._forget is not None:
            for tp in parts:
                self._forget(tp)

    def on_assign(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        seek: dict[TopicPartition, int] = {}
        for tp in map(_tp, partitions):
            try:
                found = self.store.load(tp)
            except PartitionStateError:
                log.exception("unreadable partition state ignored; the partition starts from empty state",
                              extra={"topic": tp[0], "partition": tp[1]})
                continue
            if found is None:
                continue
            state, offset = found
            self._restore(tp, state)
            seek[tp] = offset
            self.restored += 1
        return seek
