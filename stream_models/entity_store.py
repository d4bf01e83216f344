"""Per-entity state keyed like Kafka: the event history of each card and terminal, and the partitioner.

- `EntityHistory`: per-entity ring buffers of recent events in preallocated numpy arrays, bounded by an
  LRU on the number of entities (cards and terminals of `transaction_features`). Its `state(slots)` /
  `load(state, merge=True)` move a subset of entities between workers.
- `partition_of(key, n)`: the Java client's default partitioner (murmur2 of the UTF-8 key), so a worker
  hands over exactly the entities of the partitions it loses (transaction and sensor state alike).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch


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


class EntityHistory:
    """Per-entity ring buffers of recent events (card, terminal), with an LRU bound on the number of entities.

    `fields` maps a name to (dtype, fill value); each entity has `capacity` positions per field, and the
    capacity doubles when an append would overwrite an event still inside the caller's look-back.

    >>> h = EntityHistory({"ts": (np.dtype(np.float64), -np.inf)}, max_entities=2, capacity=4)
    >>> slots = h.slots(["a", "b"], now=0.0)
    >>> h.append(slots, {"ts": np.array([1.0, 2.0])}, keep_after=-np.inf).tolist()
    [0, 0]
    >>> _ = h.slots(["b"], now=3.0)
    >>> _ = h.slots(["c"], now=5.0)  # a third entity evicts the least recently seen one ("a")
    >>> sorted(k for k in h.keys if k)
    ['b', 'c']
    """

    def __init__(self, fields: dict[str, tuple[np.dtype, float]], max_entities: int, capacity: int):
        self.fields = fields  # name -> (dtype, fill value)
        self.max_entities = max_entities
        self.slot_of: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.capacity = capacity
        self.n_slots = 0
        self.head = np.zeros(0, np.int64)  # events ever appended per slot
        self.last_seen = np.zeros(0, np.float64)
        self.data = {n: np.zeros((0, capacity), dt) for n, (dt, _) in fields.items()}
        self.evictions = 0

    def _grow_slots(self, n: int) -> None:
        old = self.n_slots
        self.head = np.concatenate([self.head, np.full(n - old, -1, np.int64)])  # -1: unused slot
        self.last_seen = np.concatenate([self.last_seen, np.full(n - old, -np.inf)])
        for name, (dt, fill) in self.fields.items():
            pad = np.full((n - old, self.capacity), fill, dt)
            self.data[name] = np.concatenate([self.data[name], pad])
        self.keys.extend([None] * (n - old))
        self.n_slots = n

    def _clear(self, slots: np.ndarray) -> None:
        self.head[slots] = -1
        self.last_seen[slots] = -np.inf
        for name, (_, fill) in self.fields.items():
            self.data[name][slots] = fill

    def slots(self, keys: Sequence[str], now: float) -> np.ndarray:
        """Slot per key, creating slots for new keys (evicting least recently seen entities)."""
        get = self.slot_of.get
        out = np.fromiter((get(k, -1) for k in keys), np.int64, len(keys))
        missing = np.nonzero(out < 0)[0]
        if len(missing):
            new_keys = list(dict.fromkeys(keys[i] for i in missing))
            free = np.flatnonzero(self.head[: self.n_slots] < 0)[: len(new_keys)].tolist()  # unused slots
            need = len(new_keys) - len(free)
            if need > 0:
                room = self.max_entities - self.n_slots
                if room > 0:
                    start = self.n_slots
                    self._grow_slots(min(self.max_entities, max(start + need, start + start // 4, 64)))  # 1.25x: less slack
                    free += list(range(start, self.n_slots))[:need]
                    need = len(new_keys) - len(free)
                if need > 0:  # evict in bulk (1 % of the bound at least) so the sort is amortised
                    victims = self._evict(max(need, self.max_entities // 100), protect=out[out >= 0])
                    free += victims[:need]
            if len(free) < len(new_keys):
                raise ValueError("one batch holds more distinct entities than the LRU bound allows")
            for key, slot in zip(new_keys, free, strict=False):
                self.slot_of[key] = slot
                self.keys[slot] = key
            self.head[free] = 0
            out[missing] = [self.slot_of[keys[i]] for i in missing]
        self.last_seen[out] = now
        return out

    def _evict(self, n: int, protect: np.ndarray) -> list[int]:
        last = self.last_seen.copy()
        last[protect] = np.inf
        last[self.head < 0] = np.inf  # already free
        victims = np.argsort(last, kind="stable")[:n]
        victims = victims[np.isfinite(last[victims])]
        for s in victims:
            del self.slot_of[self.keys[s]]
            self.keys[s] = None
        self._clear(victims)
        self.evictions += n
        return victims.tolist()

    def drop(self, keys: Collection[str]) -> None:
        victims = [self.slot_of.pop(k) for k in keys if k in self.slot_of]
        for s in victims:
            self.keys[s] = None
        if victims:
            self._clear(np.asarray(victims, np.int64))

    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: arr[slots] for name, arr in self.data.items()}  # each (n, C)

    def append(self, slots: np.ndarray, values: dict[str, np.ndarray], keep_after: float) -> np.ndarray:
        """Append one event per (unique) slot; returns each event's absolute index in its slot."""
        cap = self.capacity
        k = self.head[slots]
        pos = k % cap
        old_ts = self.data["ts"][slots, pos]
        if ((k >= cap) & (old_ts > keep_after)).any():  # would overwrite an event still in a window
            self._grow_capacity()
            return self.append(slots, values, keep_after)
        for name, v in values.items():
            self.data[name][slots, pos] = v
        self.head[slots] = k + 1
        return k

    def _grow_capacity(self) -> None:
        cap, new_cap = self.capacity, self.capacity * 2
        p = np.arange(cap)[None, :]
        h = self.head[:, None]
        k = h - 1 - ((h - 1 - p) % cap)  # (S, C) absolute index stored at each position
        valid = k >= 0
        rows = np.broadcast_to(np.arange(self.n_slots)[:, None], k.shape)[valid]
        new_pos = (k % new_cap)[valid]
        for name, (dt, fill) in self.fields.items():
            new = np.full((self.n_slots, new_cap), fill, dt)
            new[rows, new_pos] = self.data[name][valid]
            self.data[name] = new
        self.capacity = new_cap

    def position(self, slots: np.ndarray, k: np.ndarray) -> np.ndarray:
        return k % self.capacity

    def state(self, slots: np.ndarray | None = None) -> dict[str, Any]:
        sel = np.arange(self.n_slots) if slots is None else slots
        sel = sel[[self.keys[s] is not None for s in sel]] if len(sel) else sel
        return {
            "keys": [self.keys[s] for s in sel],
            "slots": torch.from_numpy(np.asarray(sel, np.int64)),
            "capacity": self.capacity,
            "head": torch.from_numpy(self.head[sel].copy()),
            "last_seen": torch.from_numpy(self.last_seen[sel].copy()),
            "data": {n: torch.from_numpy(a[sel].copy()) for n, a in self.data.items()},
        }

    def load(self, state: dict[str, Any], merge: bool = False) -> dict[int, int]:
        """Load entities; returns {old slot index in the state: new slot}."""
        if not merge:
            self.slot_of, self.keys, self.n_slots = {}, [], 0
            self.head = np.zeros(0, np.int64)
            self.last_seen = np.zeros(0, np.float64)
            self.capacity = int(state["capacity"])
            self.data = {n: np.zeros((0, self.capacity), dt) for n, (dt, _) in self.fields.items()}
        while self.capacity < int(state["capacity"]):
            self._grow_capacity()
        keys = list(state["keys"])
        if not keys:
            return {}
        self.drop(keys)
        slots = self.slots(keys, now=-np.inf)
        head = state["head"].numpy()
        self.head[slots] = head
        self.last_seen[slots] = state["last_seen"].numpy()
        src_cap = int(state["capacity"])
        p = np.arange(src_cap)[None, :]
        h = head[:, None]
        k = h - 1 - ((h - 1 - p) % src_cap)
        valid = k >= 0
        rows = np.broadcast_to(slots[:, None], k.shape)[valid]
        new_pos = (k % self.capacity)[valid]
        for name in self.fields:
            self.data[name][rows, new_pos] = state["data"][name].numpy()[valid]
        return dict(enumerate(slots.tolist()))
