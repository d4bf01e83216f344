"""Per-device sliding windows of sensor readings with online normalisation.

Each device keeps a ring buffer of its last W raw readings per channel and running
mean / variance per channel (Welford), optionally frozen once a channel has seen
`freeze_after` readings (a warm-up). A window is emitted for every event, normalised with
the device's statistics as of that event; `ready` says whether W readings exist yet.

Batches are processed in "occurrence ranks": the r-th event of each device in the batch is
handled together with the other r-th events, so a batch gives exactly (bit for bit) the
windows that one-by-one processing gives, also when one device appears several times.

>>> from types import SimpleNamespace as E
>>> sw = SensorWindows(SensorWindowsConfig(window=2, channels=("a",), normalize=False))
>>> _, X, ready = sw.update_many([E(event_id="1", ts=0.0, device_id="d", readings={"a": 1.0}),
...                               E(event_id="2", ts=1.0, device_id="d", readings={"a": 2.0})])
>>> X[:, :, 0].tolist(), ready.tolist()
([[0.0, 1.0], [1.0, 2.0]], [False, True])
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from stream_models.entity_store import EntitySlots, partition_of
from stream_models.errors import ModelError


@dataclass(frozen=True)
class SensorWindowsConfig:
    window: int = 30  # W readings per window
    channels: tuple[str, ...] | None = None  # None: the sorted channels of the first event
    normalize: bool = True
    freeze_after: int | None = None  # freeze a channel's mean/var after this many readings
    min_std: float = 1e-8  # channels with a smaller std are centred but not scaled
    # widen a channel's scale by its warm-up trend (slope per reading) x this many readings, so a
    # channel that drifts steadily (a temperature) does not read as an anomaly once it moved on
    drift_horizon: float | None = None
    max_devices: int = 100_000  # LRU bound
    ttl_s: float | None = None  # drop devices silent for this long (event time)
    num_partitions: int | None = None  # Kafka partitions of the sensors topic (for snapshots)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ModelError("window must be >= 1")
        if self.max_devices < 1:
            raise ModelError("max_devices must be >= 1")




class _Batch(NamedTuple):
    """One `update_many` call's arrays: each event's slot, rank among its device's events, readings and time, and
    the outputs (windows, ready)."""

    slots: np.ndarray
    ranks: np.ndarray
    values: np.ndarray
    ts: np.ndarray
    out: np.ndarray
    ready: np.ndarray


class SensorWindows:
    """Keyed sliding windows; `update_many(events) -> (keys, X (B, W, C) float32, ready (B,))`."""

    def __init__(self, config: SensorWindowsConfig | None = None) -> None:
        self.config = config or SensorWindowsConfig()
        self.channels: list[str] | None = list(self.config.channels) if self.config.channels else None
        self._now = -np.inf  # newest event time seen
        self._alloc()

    # ------------------------------------------------------------------ storage
    def _alloc(self) -> None:
        """Empty storage for the current channels; the devices' rows come from `self._devices`."""
        self._devices = EntitySlots(self.config.max_devices, grow=self._grow, reset=self._reset)
        W, C, n = self.config.window, len(self.channels or ()), 0
        self._buf = np.zeros((n, W, C), np.float32)  # raw readings, ring buffer (float32, as the models read them)
        self._pos = np.zeros(n, dtype=np.int64)  # next write position
        self._count = np.zeros(n, dtype=np.int64)  # readings seen
        self._n = np.zeros((n, C))  # readings counted in the statistics
        self._mean = np.zeros((n, C))
        self._m2 = np.zeros((n, C))
        self._ckx = np.zeros((n, C))  # co-moment of (reading index, value): the trend
        self._last_ts = np.zeros(n)

    def _grow(self, need: int) -> int:
        old = self._buf.shape[0]
        new = min(max(need, old + old // 4, 16), self.config.max_devices)  # 1.25x: less slack
        for name in ("_buf", "_pos", "_count", "_n", "_mean", "_m2", "_ckx", "_last_ts"):
            arr = getattr(self, name)
            grown = np.zeros((new, *arr.shape[1:]), dtype=arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        return new

    def _reset(self, slot: int) -> None:
        self._buf[slot] = 0.0
        self._pos[slot] = self._count[slot] = 0
        self._n[slot] = self._mean[slot] = self._m2[slot] = self._ckx[slot] = 0.0

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device: str) -> bool:
        return device in self._devices

    # ------------------------------------------------------------------ updates
    def _readings(self, events: Sequence[Any]) -> np.ndarray:
        if self.channels is None:
            self.channels = sorted(events[0].readings)
            self._alloc()
        chans = self.channels
        if len(chans) > 1:
            every = operator.itemgetter(*chans)
            try:  # the usual case: every event has every channel
                return np.array([every(ev.readings) for ev in events], dtype=np.float64)
            except KeyError:
                pass
        return np.array([[ev.readings.get(c, np.nan) for c in chans] for ev in events], dtype=np.float64)

    def update_many(self, events: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Add the events (arrival order) and return their windows, oldest reading first."""
        W = self.config.window
        if not events:
            self.last_z = np.zeros((0, len(self.channels or ())))
            self.last_n = np.zeros((0, len(self.channels or ())))
            return [], np.zeros((0, W, len(self.channels or ())), np.float32), np.zeros(0, bool)
        values = self._readings(events)  # (B, C), NaN where a channel is missing
        keys = [str(ev.device_id) for ev in events]
        ts = np.array([float(ev.ts) for ev in events])
        B, C = values.shape
        out = np.empty((B, W, C), dtype=np.float32)
        self.last_z = np.zeros((B, C))  # each reading's z-scores against its device's statistics before it
        self.last_n = np.zeros((B, C))  # the readings those statistics came from
        ready = np.empty(B, dtype=bool)
        slots = np.empty(B, dtype=np.int64)
        ranks = np.empty(B, dtype=np.int64)
        batch = _Batch(slots, ranks, values, ts, out, ready)
        start = 0
        seen: dict[str, int] = {}  # device -> occurrences in the current chunk
        last_at: dict[str, float] = {}  # device -> time of its latest event in the current chunk (ttl only)
        chunk_now = self._now  # newest event time up to (not including) event i (ttl only)
        ttl, max_devices, slot_of = self.config.ttl_s, self.config.max_devices, self._devices.slot
        rank_list: list[int] = []  # ranks and slots of events start.. (Python lists: a per-event numpy store is slow)
        slot_list: list[int] = []

        def apply(part: slice) -> None:
            ranks[part], slots[part] = rank_list, slot_list
            rank_list.clear()
            slot_list.clear()
            self._apply(part, batch)

        for i, (key, t) in enumerate(zip(keys, ts.tolist(), strict=True)):
            # a chunk never holds more devices than the LRU bound, so eviction inside a chunk
            # never hits a device of that chunk
            if key not in seen and len(seen) >= max_devices:
                apply(slice(start, i))
                start, seen, last_at = i, {}, {}
            if ttl is not None:
                # one-by-one processing would have expired the device before this event
                if key in seen and chunk_now - last_at[key] > ttl:
                    apply(slice(start, i))
                    start, seen, last_at = i, {}, {}
                    self._devices.release(key)
                elif key not in seen and key in self._devices:
                    if chunk_now - self._last_ts[self._devices.order[key]] > ttl:
                        self._devices.release(key)
                last_at[key] = t
                chunk_now = max(chunk_now, t)
            r = seen.get(key, 0)
            seen[key] = r + 1
            rank_list.append(r)
            slot_list.append(slot_of(key))
        apply(slice(start, B))
        self._expire()
        return keys, out, ready

    def _apply(self, part: slice, batch: _Batch) -> None:
        """Process events `part` (slots already resolved): the events of devices whose statistics are frozen in one
        pass, the others rank by rank, vectorised over devices (devices never share state, so the split is exact)."""
        if part.stop <= part.start:
            return
        rows = np.arange(part.start, part.stop)
        frozen = self._frozen(batch.slots[part])
        if frozen.any():
            self._apply_frozen(rows[frozen], batch)
        if not frozen.all():
            self._apply_by_rank(rows[~frozen], batch)
        self._now = max(self._now, float(batch.ts[part].max()))

    def _frozen(self, slots: np.ndarray) -> np.ndarray:
        """Whether each slot's statistics no longer move (every channel has `freeze_after` readings)."""
        if self.config.freeze_after is None:
            return np.zeros(len(slots), bool)
        return (self._n[slots] >= self.config.freeze_after).all(axis=1)

    def _apply_by_rank(self, rows: np.ndarray, batch: _Batch) -> None:
        """Events `rows` (ascending) rank by rank: the r-th event of every device together."""
        slots, ranks, values, ts, out, ready = batch
        W = self.config.window
        offsets = np.arange(W)
        part_ranks = ranks[rows]
        for r in range(int(part_ranks.max()) + 1):
            idx = rows[part_ranks == r]
            s = slots[idx]
            x = values[idx]  # (k, C)
            known = ~np.isnan(x)
            self._z_scores(idx, s, x, known)
            stats_on = known.copy()
            if self.config.freeze_after is not None:
                stats_on &= self._n[s] < self.config.freeze_after
            # Welford update, only where the channel is present and not frozen
            n_new = self._n[s] + stats_on
            delta = np.where(stats_on, x - self._mean[s], 0.0)
            mean_new = self._mean[s] + np.where(stats_on, delta / np.maximum(n_new, 1.0), 0.0)
            m2_new = self._m2[s] + np.where(stats_on, delta * (x - mean_new), 0.0)
            # index k = n_new; k - mean(1..n_old) = n_new / 2
            ckx_new = self._ckx[s] + np.where(stats_on, n_new / 2 * (x - mean_new), 0.0)
            self._n[s], self._mean[s], self._m2[s], self._ckx[s] = n_new, mean_new, m2_new, ckx_new
            # a missing channel repeats the device's mean
            self._buf[s, self._pos[s]] = np.where(known, x, mean_new)
            self._pos[s] = (self._pos[s] + 1) % W
            self._count[s] += 1
            self._last_ts[s] = ts[idx]
            order = (self._pos[s][:, None] + offsets[None, :]) % W  # (k, W) oldest first
            win = self._buf[s[:, None], order]  # (k, W, C)
            if self.config.normalize:
                win = (win - mean_new[:, None, :]) / self._scale(n_new, m2_new, ckx_new)[:, None, :]
            out[idx] = win
            ready[idx] = self._count[s] >= W

    def _z_scores(self, rows: np.ndarray, s: np.ndarray, x: np.ndarray, known: np.ndarray) -> None:
        """`last_z` / `last_n` of events `rows` (slots `s`, readings `x`): against the statistics before them."""
        n_old = self._n[s]
        std_old = np.sqrt(np.where(n_old > 1, self._m2[s] / np.maximum(n_old, 1.0), 0.0))
        ok = known & (n_old > 1) & (std_old >= self.config.min_std)
        self.last_z[rows] = np.where(ok, (np.nan_to_num(x) - self._mean[s]) / np.where(ok, std_old, 1.0), 0.0)
        self.last_n[rows] = np.where(ok, n_old, 0.0)

    def _scale(self, n: np.ndarray, m2: np.ndarray, ckx: np.ndarray) -> np.ndarray:
        """Each channel's normalising scale from its statistics (count, M2, trend co-moment)."""
        var = np.where(n > 1, m2 / np.maximum(n, 1.0), 1.0)  # population variance
        if self.config.drift_horizon:
            m2_k = n * (n**2 - 1) / 12  # co-moment of the indices 1..n
            slope = np.where(n > 1, ckx / np.maximum(m2_k, 1.0), 0.0)
            var = var + (slope * self.config.drift_horizon) ** 2
        std = np.sqrt(var)
        return np.where(std < self.config.min_std, 1.0, std)  # constant channel: unscaled

    def _apply_frozen(self, rows: np.ndarray, batch: _Batch) -> None:
        """Events `rows` (ascending) of devices with frozen statistics (the usual case after warm-up) in one pass:
        the same arithmetic as rank by rank, bit for bit."""
        slots, ranks, values, ts, out, ready = batch
        cfg = self.config
        W = cfg.window
        s, r, x = slots[rows], ranks[rows], values[rows]
        known = ~np.isnan(x)
        self._z_scores(rows, s, x, known)
        # each device's statistics: frozen, every update adds nothing (as rank by rank, where a -0.0 becomes 0.0)
        devices, at, counts = np.unique(s, return_inverse=True, return_counts=True)
        n, mean, m2, ckx = (a[devices] + 0.0 for a in (self._n, self._mean, self._m2, self._ckx))
        self._n[devices], self._mean[devices], self._m2[devices], self._ckx[devices] = n, mean, m2, ckx
        fill = np.where(known, x, mean[at]).astype(np.float32)
        # each device's last W readings (oldest first) followed by its new ones, in arrival order
        offsets = np.arange(W)
        history = np.zeros((len(devices), W + int(counts.max()), x.shape[1]), np.float32)
        history[:, :W] = self._buf[devices[:, None], (self._pos[devices][:, None] + offsets[None, :]) % W]
        history[at, W + r] = fill
        # the ring buffer as writing the readings one by one leaves it (only each device's last W writes remain)
        last_w = r >= counts[at] - W
        self._buf[s[last_w], (self._pos[s[last_w]] + r[last_w]) % W] = fill[last_w]
        newest = r == counts[at] - 1
        self._last_ts[s[newest]] = ts[rows][newest]
        ready[rows] = self._count[s] + r + 1 >= W
        self._pos[devices] = (self._pos[devices] + counts) % W
        self._count[devices] += counts
        if cfg.normalize:  # frozen statistics scale a reading the same in every window: once per reading
            history = ((history - mean[:, None, :]) / self._scale(n, m2, ckx)[:, None, :]).astype(np.float32)
        # (devices, readings + 1, W, C): every window of each device's history, as a view
        windows = np.lib.stride_tricks.sliding_window_view(history, W, axis=1).transpose(0, 1, 3, 2)
        out[rows] = windows[at, r + 1]  # the window ending at each event

    def _expire(self) -> None:
        """Reclaim the slots of devices silent for more than `ttl_s`."""
        if self.config.ttl_s is None:
            return
        stale = [d for d, s in self._devices.order.items() if self._now - self._last_ts[s] > self.config.ttl_s]
        for d in stale:
            self._devices.release(d)

    # ------------------------------------------------------------------ state
    def partitions_of(self, devices: Iterable[str]) -> list[int]:
        if not self.config.num_partitions:
            raise ModelError("num_partitions is not configured")
        return [partition_of(d, self.config.num_partitions) for d in devices]

    def snapshot(self, partitions: Iterable[int] | None = None) -> dict[str, Any]:
        """Plain state (arrays + lists); `partitions` keeps only those partitions' devices."""
        devices = list(self._devices.order)
        if partitions is not None:
            wanted = set(partitions)
            devices = [d for d, p in zip(devices, self.partitions_of(devices), strict=True) if p in wanted]
        s = np.array([self._devices.order[d] for d in devices], dtype=np.int64)
        return {
            "config": asdict(self.config),
            "channels": list(self.channels or ()),
            "devices": devices,
            "buf": self._buf[s].copy(),
            "pos": self._pos[s].copy(),
            "count": self._count[s].copy(),
            "n": self._n[s].copy(),
            "mean": self._mean[s].copy(),
            "m2": self._m2[s].copy(),
            "ckx": self._ckx[s].copy(),
            "last_ts": self._last_ts[s].copy(),
        }

    def restore(self, snap: dict[str, Any], merge: bool = False) -> None:
        """Load a snapshot; `merge=True` adds its devices (e.g. a partition moved here)."""
        chans = list(snap["channels"]) or None
        if not merge:
            self.channels = chans
            self._alloc()
        elif chans is not None and self.channels is not None and chans != self.channels:
            raise ModelError("snapshot channels differ from this state's channels")
        elif self.channels is None:
            self.channels = chans
            self._alloc()
        for i, d in enumerate(snap["devices"]):
            slot = self._devices.slot(d)
            self._buf[slot] = snap["buf"][i]
            self._pos[slot] = snap["pos"][i]
            self._count[slot] = snap["count"][i]
            self._n[slot] = snap["n"][i]
            self._mean[slot] = snap["mean"][i]
            self._m2[slot] = snap["m2"][i]
            self._ckx[slot] = snap["ckx"][i]
            self._last_ts[slot] = snap["last_ts"][i]

    def forget(self, devices: Iterable[str]) -> None:
        """Forget these devices (their next reading starts a new window and new statistics)."""
        for d in devices:
            self._devices.release(d)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the devices of revoked partitions."""
        wanted = set(partitions)
        devices = list(self._devices.order)
        for d, p in zip(devices, self.partitions_of(devices), strict=True):
            if p in wanted:
                self._devices.release(d)
