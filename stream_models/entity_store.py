"""A bounded, keyed store of per-entity state (card, terminal, device) in preallocated arrays.

Keys (str) map to row indices into numpy arrays that the caller declares (name -> dtype, shape,
fill value). A feature module looks up a batch of keys at once and then reads and writes the
rows with vectorised numpy.

- Bounded: at most `max_entities` rows; the least recently used entities are evicted, in chunks
  of `evict_chunk` (default 1% of the capacity) so eviction costs O(capacity) rarely, not
  per batch. Entities of the current batch are never evicted.
- TTL by event time: an entity not seen for `ttl_s` seconds of event time is forgotten; when it
  comes back its row starts again from the fill values. Expired rows are freed lazily (when
  room is needed, or by `expire(now)`).
- Partitioned like Kafka: `partition_of(key, n)` is the Java client's default partitioner
  (murmur2 of the UTF-8 key), so `snapshot(partitions)` / `restore` move exactly the entities
  of the partitions a worker gains or loses.

>>> store = EntityStore({"count": np.int64, "sum": (np.float64, (2,))}, max_entities=3)
>>> idx = store.lookup_or_insert(["a", "b", "a"])
>>> idx.tolist()
[0, 1, 0]
>>> np.add.at(store["count"], idx, 1)
>>> store["count"][store.lookup(["a", "b", "zz"])].tolist()
[2, 1, 0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from stream_models.errors import ModelError


def murmur2_py(data: bytes) -> int:
    """Murmur2 as in the Java client's `Utils.murmur2` (signed 32-bit result)."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, base = length & 3, length & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


try:  # kafka-python's port of the same function (the partitioner our producers use)
    from kafka.partitioner.default import murmur2 as _murmur2
except ImportError:  # pragma: no cover - kafka-python is a dependency; this keeps the store importable alone
    _murmur2 = murmur2_py


def partition_of(key: str | bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (str keys are UTF-8 encoded)."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (_murmur2(data) & 0x7FFFFFFF) % n_partitions


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One per-entity field: a value of `shape` and `dtype`, starting at `fill`."""

    dtype: Any
    shape: tuple[int, ...] = ()
    fill: Any = 0


def _spec(value: Any) -> FieldSpec:
    if isinstance(value, FieldSpec):
        return value
    if isinstance(value, tuple):
        return FieldSpec(*value)
    return FieldSpec(value)


class EntityStore:
    """Per-entity state for at most `max_entities` keys (LRU eviction, optional event-time TTL).

    Parameters
    ----------
    fields
        name -> dtype, (dtype, shape), (dtype, shape, fill) or a FieldSpec.
    max_entities
        Capacity; arrays are allocated for it up front (zero-filled pages cost nothing until used).
    ttl_s
        Forget entities idle for this many seconds of event time (None = never).
    evict_chunk
        Entities evicted at once when the store is full (default max(1, max_entities // 100)).
    """

    def __init__(
        self,
        fields: Mapping[str, Any],
        max_entities: int,
        *,
        ttl_s: float | None = None,
        evict_chunk: int | None = None,
    ) -> None:
        if max_entities < 1:
            raise ModelError("max_entities must be >= 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ModelError("ttl_s must be > 0")
        self.max_entities = int(max_entities)
        self.ttl_s = ttl_s
        self.evict_chunk = int(evict_chunk or max(1, self.max_entities // 100))
        self.specs = {name: _spec(spec) for name, spec in fields.items()}
        cap = self.max_entities
        self.arrays: dict[str, np.ndarray] = {
            name: np.zeros((cap, *spec.shape), dtype=spec.dtype) for name, spec in self.specs.items()
        }
        self._index: dict[str, int] = {}
        self._keys: list[str | None] = [None] * cap  # row -> key
        self._live = np.zeros(cap, dtype=bool)
        # logical clock of the last batch that touched each row
        self._last_used = np.zeros(cap, dtype=np.int64)
        self._last_ts = np.full(cap, -np.inf)  # latest event time seen per row
        self._partition = np.full(cap, -1, dtype=np.int32)  # cached partition (for _partition_n partitions)
        self._partition_n = 0
        self._free: list[int] = []  # rows freed by eviction / expiry / removal
        self._high = 0  # rows [0, _high) have been handed out at least once
        self._clock = 0
        self.watermark = -math.inf  # largest event time seen
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __getitem__(self, field: str) -> np.ndarray:
        """The (max_entities, *shape) array of `field`; index it with the rows from lookup_or_insert."""
        return self.arrays[field]

    def keys(self) -> list[str]:
        return list(self._index)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of `keys` (-1 where absent); touches nothing."""
        get = self._index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def lookup_or_insert(self, keys: Sequence[str], ts: np.ndarray | float | None = None) -> np.ndarray:
        """(B,) rows for a batch of keys, inserting new ones (rows start at the fill values).

        Repeated keys get the same row. `ts` (event times, (B,) or scalar) drives the TTL: a key
        idle longer than `ttl_s` before its first event of the batch starts afresh.
        """
        n = len(keys)
        self._clock += 1
        rows = self.lookup(keys)
        times = None if ts is None else np.broadcast_to(np.asarray(ts, dtype=np.float64), (n,))
        if self.ttl_s is not None and times is not None and n:
            self._reset_expired_rows(rows, times)
        found = rows >= 0
        self._last_used[rows[found]] = self._clock
        missing = np.flatnonzero(~found)
        if missing.size:
            new_keys = list(dict.fromkeys(keys[i] for i in missing.tolist()))
            slots = self._allocate(len(new_keys))
            index, names = self._index, self._keys
            for key, slot in zip(new_keys, slots.tolist(), strict=True):
                index[key] = slot
                names[slot] = key
            self._live[slots] = True
            self._last_used[slots] = self._clock
            self._last_ts[slots] = -np.inf
            self._partition[slots] = -1
            self._fill(slots)
            rows[missing] = self.lookup([keys[i] for i in missing.tolist()])
        if times is not None and n:
            np.maximum.at(self._last_ts, rows, times)
            self.watermark = max(self.watermark, float(times.max()))
        return rows

    def _reset_expired_rows(self, rows: np.ndarray, times: np.ndarray) -> None:
        """Rows idle beyond the TTL at their first event in this batch start from the fill values."""
        found = np.flatnonzero(rows >= 0)
        if not found.size:
            return
        _, first = np.unique(rows[found], return_index=True)
        first_pos = found[first]
        stale = rows[first_pos][self._last_ts[rows[first_pos]] < times[first_pos] - self.ttl_s]
        if stale.size:
            self._fill(stale)
            self.expired += int(stale.size)

    def _fill(self, rows: np.ndarray) -> None:
        for name, spec in self.specs.items():
            self.arrays[name][rows] = spec.fill

    def _allocate(self, n: int) -> np.ndarray:
        available = len(self._free) + self.max_entities - self._high
        if available < n:
            self._make_room(n - available)
        n_reused = min(n, len(self._free))
        reused = self._free[len(self._free) - n_reused :]
        del self._free[len(self._free) - n_reused :]
        fresh = np.arange(self._high, self._high + n - n_reused, dtype=np.int64)
        self._high += n - n_reused
        return np.concatenate([np.asarray(reused, dtype=np.int64), fresh])

    def _make_room(self, needed: int) -> None:
        """Free at least `needed` rows: expired ones first, then the least recently used."""
        if self.ttl_s is not None and self.watermark > -math.inf:
            needed -= self._expire(self.watermark, spare_current=True)
            if needed <= 0:
                return
        candidates = np.flatnonzero(self._live & (self._last_used < self._clock))
        if candidates.size < needed:
            raise ModelError(
                f"a batch holds more distinct entities than max_entities={self.max_entities}; use smaller batches"
            )
        want = max(needed, min(self.evict_chunk, candidates.size))
        if want < candidates.size:
            candidates = candidates[np.argpartition(self._last_used[candidates], want - 1)[:want]]
        self._release(candidates)
        self.evicted += int(candidates.size)

    def _release(self, rows: np.ndarray) -> None:
        index, names = self._index, self._keys
        for row in rows.tolist():
            del index[names[row]]
            names[row] = None
        self._live[rows] = False
        self._free.extend(rows.tolist())

    def expire(self, now: float) -> int:
        """Forget entities whose last event is older than `now - ttl_s`; returns how many."""
        return self._expire(now, spare_current=False)

    def _expire(self, now: float, spare_current: bool) -> int:
        if self.ttl_s is None:
            return 0
        stale = self._live & (self._last_ts < now - self.ttl_s)
        if spare_current:  # rows of the batch being looked up are not stale
            stale &= self._last_used < self._clock
        rows = np.flatnonzero(stale)
        self._release(rows)
        self.expired += int(rows.size)
        return int(rows.size)

    def remove(self, keys: Iterable[str]) -> int:
        """Forget these entities (absent keys are ignored); returns how many were removed."""
        rows = np.array([self._index[k] for k in keys if k in self._index], dtype=np.int64)
        self._release(rows)
        return int(rows.size)

    def partitions(self, n_partitions: int) -> np.ndarray:
        """(max_entities,) partition of each live row (murmur2 is cached per row), -1 for free rows."""
        if n_partitions != self._partition_n:
            self._partition[:] = -1
            self._partition_n = n_partitions
        todo = np.flatnonzero(self._live & (self._partition < 0))
        names = self._keys
        self._partition[todo] = [partition_of(cast(str, names[row]), n_partitions) for row in todo.tolist()]
        return np.where(self._live, self._partition, -1)

    def drop_partitions(self, partitions: Iterable[int], n_partitions: int) -> int:
        """Forget the entities of these partitions (e.g. on revoke, after snapshotting them)."""
        rows = np.flatnonzero(np.isin(self.partitions(n_partitions), list(partitions)))
        self._release(rows)
        return int(rows.size)

    def snapshot(
        self, partitions: Iterable[int] | None = None, n_partitions: int | None = None
    ) -> dict[str, Any]:
        """Plain-data state (checkpointable) of all entities, or of those in `partitions`."""
        if partitions is None:
            rows = np.flatnonzero(self._live)
        else:
            if not n_partitions:
                raise ModelError("snapshot(partitions=...) needs n_partitions")
            rows = np.flatnonzero(np.isin(self.partitions(n_partitions), list(partitions)))
        rows = rows[np.argsort(self._last_used[rows], kind="stable")]  # least recently used first
        names = self._keys
        return {
            "keys": [names[row] for row in rows.tolist()],
            "last_ts": self._last_ts[rows].copy(),
            "fields": {name: array[rows].copy() for name, array in self.arrays.items()},
            "watermark": self.watermark,
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Add the entities of a snapshot (replacing existing ones); they count as just used."""
        keys = list(snapshot["keys"])
        if not keys:
            return
        if set(snapshot["fields"]) != set(self.specs):
            raise ModelError(
                f"snapshot fields {sorted(snapshot['fields'])} != store fields {sorted(self.specs)}"
            )
        if len(keys) > self.max_entities:
            raise ModelError(
                f"snapshot holds {len(keys)} entities, more than max_entities={self.max_entities}"
            )
        rows = self.lookup_or_insert(keys)
        # restored entities count as the most recently used, keeping their order in the snapshot
        self._last_used[rows] = self._clock + np.arange(1, len(keys) + 1)
        self._clock += len(keys)
        self._last_ts[rows] = np.asarray(snapshot["last_ts"], dtype=np.float64)
        for name, values in snapshot["fields"].items():
            self.arrays[name][rows] = np.asarray(values, dtype=self.specs[name].dtype)
        self.watermark = max(self.watermark, float(snapshot.get("watermark", -math.inf)))

    def state_dict(self) -> dict[str, Any]:
        return self.snapshot()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the whole store by a snapshot."""
        self.remove(self.keys())
        self.restore(state)

    def memory_bytes(self) -> int:
        """Bytes held by the arrays and the key index (approximate; strings counted by sys.getsizeof)."""
        import sys

        arrays = sum(a.nbytes for a in self.arrays.values())
        book = self._live.nbytes + self._last_used.nbytes + self._last_ts.nbytes + self._partition.nbytes
        index = sys.getsizeof(self._index) + sys.getsizeof(self._keys) + sys.getsizeof(self._free)
        strings = sum(sys.getsizeof(k) for k in self._index)
        return arrays + book + index + strings
