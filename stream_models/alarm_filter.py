"""Persistence filter on alarms: raise only after m of the last n rows of a device were flagged.

With hysteresis (`m_off`), a raised alarm stays up until at most `m_off` of the last n
rows are flagged, so a long fault whose score dips now and then stays one alarm (one
changepoint for NAB) instead of many.

>>> f = AlarmFilter(AlarmFilterConfig(m=2, n=3))
>>> f.update_many(["d"] * 5, [True, False, True, True, False]).tolist()
[False, False, True, True, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_models.errors import ModelError


@dataclass(frozen=True)
class AlarmFilterConfig:
    m: int = 3  # flags among the last n rows needed to raise an alarm
    n: int = 5
    m_off: int | None = None  # alarm drops when flags among the last n <= m_off (None: m - 1)
    max_devices: int = 100_000  # LRU bound

    def __post_init__(self) -> None:
        if not 1 <= self.m <= self.n <= 62:
            raise ModelError("need 1 <= m <= n <= 62")
        if self.m_off is not None and not 0 <= self.m_off < self.m:
            raise ModelError("need 0 <= m_off < m")


class AlarmFilter:
    """Per-device m-of-n filter with hysteresis; exact the same in batches and one by one."""

    def __init__(self, config: AlarmFilterConfig | None = None) -> None:
        self.config = config or AlarmFilterConfig()
        self._mask = (1 << self.config.n) - 1
        self._off = self.config.m - 1 if self.config.m_off is None else self.config.m_off
        self._state: dict[str, tuple[int, bool]] = {}  # device -> (flag bits, alarm on), least recent first

    def update_many(self, keys: Sequence[str], flags: Sequence[bool] | np.ndarray) -> np.ndarray:
        """Feed the raw flags (arrival order); returns the filtered alarms (B,) bool."""
        state, m, off, mask = self._state, self.config.m, self._off, self._mask
        out = []
        for key, flag in zip(keys, np.asarray(flags, dtype=bool).tolist(), strict=True):
            bits, on = state.pop(key, (0, False))  # popped and put back: the device becomes the most recent
            bits = ((bits << 1) | flag) & mask
            count = bits.bit_count()
            on = count > off if on else count >= m
            state[key] = (bits, on)
            out.append(on)
        while len(state) > self.config.max_devices:
            del state[next(iter(state))]
        return np.array(out, dtype=bool)

    def reset(self, key: str | None = None) -> None:
        """Forget one device (or all)."""
        if key is None:
            self._state.clear()
        else:
            self._state.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        return {
            "devices": list(self._state),
            "bits": [b for b, _ in self._state.values()],
            "on": [o for _, o in self._state.values()],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self._state = dict(
            (d, (int(b), bool(o))) for d, b, o in zip(snap["devices"], snap["bits"], snap["on"], strict=True)
        )
