"""Cold-start score of a sensor reading: how far its channels sit from the device's usual values.

The sensor featuriser gives each reading's z-scores against its device's running mean and spread as they
were before that reading, and how many readings those came from (`SensorWindows.last_z`, `last_n`). A
reading is compared with the prediction interval of the n before it: t = z * sqrt((n - 1) / (n + 1)) with n - 1
degrees of freedom (Student's t, so a device's first few readings need a far larger jump to count as rare). The
score is -log10 of the two-sided tail of the rarest channel, times the number of channels (a Bonferroni bound), so
5 reads "as rare as 1 in 100,000" on any device, from its third reading on. It alerts on a single reading (a
spike), which an m-of-n alarm filter would delete, before any model is fit.

>>> import numpy as np
>>> z = np.array([[0.5, -1.0], [0.2, 9.0]])
>>> scores, reasons = ReadingProfile().score_rows(np.stack([z, np.full((2, 2), 400.0)], -1), ["temp", "rpm"], ts=None)
>>> bool(scores[0] < 1 < 5 < scores[1]), reasons
(True, {1: "rpm 9.0 sd above the device's usual"})
>>> early, _ = ReadingProfile().score_rows(np.stack([z, np.full((2, 2), 5.0)], -1), ["temp", "rpm"], ts=None)
>>> bool(early[1] < 5 < scores[1])   # 9 sd after 5 readings is not yet as rare as that
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special  # not scipy.stats: its import takes about a second of every worker's start

LN10 = math.log(10.0)


class ReadingProfile:
    name = "reading_profile"
    consumes = "z"  # the featuriser's per-channel (z-score, readings behind it) of the newest reading
    MIN_READINGS = 3  # two degrees of freedom

    def score_rows(self, Z: np.ndarray, names: list[str], ts: Any, explain_at: float = 1.0,
                   exclude_at: float = math.inf) -> tuple[np.ndarray, dict[int, str]]:
        """(scores (B,), row -> reason for rows scoring >= `explain_at`) of Z (B, C, 2): each channel's z-score and
        the readings behind it. NaN where no channel has MIN_READINGS yet."""
        Z = np.nan_to_num(np.asarray(Z, np.float64))
        if not Z.size:
            return np.zeros(len(Z)), {}
        z, n = Z[..., 0], Z[..., 1]
        usable = n >= self.MIN_READINGS
        df = np.maximum(n - 1.0, 1.0)
        t = np.abs(z) * np.sqrt(np.maximum(n - 1.0, 0.0) / (n + 1.0))
        with np.errstate(divide="ignore"):  # Student's t survival (scipy.stats.t.logsf, the same arithmetic), one-sided,
            log_tail = np.log(special.stdtr(df, -t))  # per channel; -inf far out, where the normal tail is as good
        log_tail = np.where(usable, np.where(np.isfinite(log_tail), log_tail, special.log_ndtr(-t)), 0.0)
        worst = log_tail.argmin(1)
        rows = np.arange(len(z))
        log_p = math.log(z.shape[1]) + math.log(2.0) + log_tail[rows, worst]  # Bonferroni over channels
        scores = np.where(usable.any(1), np.maximum(-log_p / LN10, 0.0), np.nan)
        reasons = {}
        for i in np.flatnonzero(scores >= explain_at).tolist():
            side = "above" if z[i, worst[i]] > 0 else "below"
            reasons[i] = f"{names[worst[i]]} {abs(z[i, worst[i]]):.1f} sd {side} the device's usual"
        return scores, reasons

    def end_chunk(self) -> None:
        """Nothing to fold: the featuriser holds each device's statistics."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: the featuriser holds each device's statistics."""
