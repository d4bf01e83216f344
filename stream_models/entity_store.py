"""Per-entity state keyed like Kafka: which row of an array holds which entity, and the partitioner.

- `EntitySlots`: entity keys -> rows of the caller's arrays, LRU-bounded; the card and terminal histories
  below and the sensor windows (`stream_models.sensor_windows`) keep their rows through it.
- `EntityHistory`: per-entity ring buffers of recent events (cards and terminals of `transaction_features`);
  `state(slots)` / `load(state, merge=True)` move a subset of entities between workers.
- `partition_of(key, n)`: the Java client's default partitioner (murmur2 of the UTF-8 key), so a worker
  hands over exactly the entities of the partitions it loses (transaction and sensor state alike).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
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


class EntitySlots:
    """Entity keys -> rows of the caller's per-entity arrays, in least-recently-used order, at most
    `max_entities` of them: a new key takes a freed row, else a new row (`grow(min_rows)` enlarges the
    caller's arrays and returns their row count), else the least recently used entity's row. `reset(row)`
    is called whenever a row is handed to a key, so it starts from the caller's fill values.

    >>> rows = []
    >>> slots = EntitySlots(2, grow=lambda need: max(need, len(rows)), reset=rows.append)
    >>> [slots.slot(k) for k in ("a", "b", "a", "c")], list(slots.order), slots.evictions
    ([0, 1, 0, 1], ['a', 'c'], 1)
    """

    def __init__(self, max_entities: int, grow: Callable[[int], int], reset: Callable[[int], None]) -> None:
        self.max_entities = max_entities
        self._grow, self._reset = grow, reset
        self.order: OrderedDict[str, int] = OrderedDict()  # key -> row, least recently used first
        self.key_at: list[str | None] = []  # row -> key (None: free)
        self._free: list[int] = []
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, key: object) -> bool:
        return key in self.order

    def slot(self, key: str) -> int:
        """The key's row (the key becomes the most recently used), assigning a row to a new key."""
        row = self.order.get(key)
        if row is not None:
            self.order.move_to_end(key)
            return row
        if not self._free:
            if len(self.order) >= self.max_entities:
                _, row = self.order.popitem(last=False)
                self.key_at[row] = None
                self._free.append(row)
                self.evictions += 1
            else:
                old = len(self.key_at)
                new = min(self.max_entities, self._grow(len(self.order) + 1))
                self.key_at.extend([None] * (new - old))
                self._free.extend(range(new - 1, old - 1, -1))
        row = self._free.pop()
        self.order[key] = row
        self.key_at[row] = key
        self._reset(row)
        return row

    def touch(self, keys: Iterable[str]) -> list[str]:
        """Mark known keys as used now; returns the unknown ones."""
        order, unknown = self.order, []
        move_to_end = order.move_to_end
        for key in keys:
            if key in order:
                move_to_end(key)
            else:
                unknown.append(key)
        return unknown

    def release(self, key: str) -> int | None:
        """Forget `key`; its row is reused by the next new key. Returns the row, None if unknown."""
        row = self.order.pop(key, None)
        if row is not None:
            self.key_at[row] = None
            self._free.append(row)
        return row


class EntityHistory:
    """Per-entity ring buffers of recent events (card, terminal), with an LRU bound on the number of entities.

    `fields` maps a name to (dtype, fill value); each entity has `capacity` positions per field, and the
    capacity grows by half when an append would overwrite an event still inside the caller's look-back (by half, not
    double: the slack is memory, checkpoint bytes and work for every window feature, per entity).

    >>> h = EntityHistory({"ts": (np.dtype(np.float64), -np.inf)}, max_entities=2, capacity=4)
    >>> slots = h.slots(["a", "b"])
    >>> h.append(slots, {"ts": np.array([1.0, 2.0])}, keep_after=-np.inf).tolist()
    [0, 0]
    >>> _ = h.slots(["b"])
    >>> _ = h.slots(["c"])  # a third entity evicts the least recently seen one ("a")
    >>> sorted(h.slot_of)
    ['b', 'c']
    """

    def __init__(self, fields: dict[str, tuple[np.dtype, float]], max_entities: int, capacity: int):
        self.fields = fields  # name -> (dtype, fill value)
        self.max_entities = max_entities
        self.capacity = capacity
        self.n_slots = 0
        self.head = np.zeros(0, np.int64)  # events ever appended per slot
        self.data = {n: np.zeros((0, capacity), dt) for n, (dt, _) in fields.items()}
        self.entities = EntitySlots(max_entities, grow=self._grow_slots, reset=self._reset)

    @property
    def slot_of(self) -> OrderedDict[str, int]:
        return self.entities.order

    @property
    def keys(self) -> list[str | None]:
        return self.entities.key_at

    @property
    def evictions(self) -> int:
        return self.entities.evictions

    def _grow_slots(self, need: int) -> int:
        old = self.n_slots
        n = min(self.max_entities, max(need, old + old // 4, 64))  # 1.25x: less slack
        self.head = np.concatenate([self.head, np.zeros(n - old, np.int64)])
        for name, (dt, fill) in self.fields.items():
            pad = np.full((n - old, self.capacity), fill, dt)
            self.data[name] = np.concatenate([self.data[name], pad])
        self.n_slots = n
        return n

    def _reset(self, slot: int) -> None:
        self.head[slot] = 0
        for name, (_, fill) in self.fields.items():
            self.data[name][slot] = fill

    def slots(self, keys: Sequence[str]) -> np.ndarray:
        """Slot per key, creating slots for new keys (evicting the least recently seen other entities)."""
        distinct = dict.fromkeys(keys)
        new = self.entities.touch(distinct)  # the batch's known entities are not evicted for its new ones
        if new:
            if len(distinct) > self.max_entities:
                raise ValueError("one batch holds more distinct entities than the LRU bound allows")
            for key in new:
                self.entities.slot(key)
        order = self.entities.order
        return np.fromiter(map(order.__getitem__, keys), np.int64, len(keys))

    def drop(self, keys: Collection[str]) -> None:
        for key in keys:
            self.entities.release(key)

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
        cap = self.capacity
        new_cap = cap + max(1, cap // 2)
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
        """The entities in `slots` (default: all, least recently used first) as tensors and lists."""
        sel = np.fromiter(self.entities.order.values(), np.int64, len(self.entities)) if slots is None else slots
        sel = sel[[self.keys[s] is not None for s in sel]] if len(sel) else sel
        return {
            "keys": [self.keys[s] for s in sel],
            "slots": torch.from_numpy(np.asarray(sel, np.int64)),
            "capacity": self.capacity,
            "head": torch.from_numpy(self.head[sel].copy()),
            "data": {n: torch.from_numpy(a[sel].copy()) for n, a in self.data.items()},
        }

    def load(self, state: dict[str, Any], merge: bool = False) -> dict[int, int]:
        """Load entities; returns {old slot index in the state: new slot}."""
        if not merge:
            self.__init__(self.fields, self.max_entities, int(state["capacity"]))  # type: ignore[misc]
        while self.capacity < int(state["capacity"]):
            self._grow_capacity()
        keys = list(state["keys"])
        if not keys:
            return {}
        self.drop(keys)
        slots = self.slots(keys)
        head = state["head"].numpy()
        self.head[slots] = head
        src_cap = int(state["capacity"])
        p = np.arange(src_cap)[None, :]
        h = head[:, None]
        k = h - 1 - ((h - 1 - p) % src_cap)
        valid = k >= 0
        rows = np.broadcast_to(slots[:, None], k.shape)[valid]
        new_pos = (k % self.capacity)[valid]
        for name in self.fields:
            if name in state["data"]:  # a field newer than the state keeps its fill value
                self.data[name][rows, new_pos] = state["data"][name].numpy()[valid]
        return dict(enumerate(slots.tolist()))
