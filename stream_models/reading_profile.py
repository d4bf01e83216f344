"""Cold-start score of a sensor reading: how far its channels sit from the device's usual values.

The sensor featuriser gives each reading's z-scores against its device's running mean and spread as they
were before that reading (`SensorWindows.last_z`). The score is -log10 of the two-sided normal tail of the
largest |z|, times the number of channels (a Bonferroni bound), so 5 reads "as rare as 1 in 100,000" on any
device. It alerts on a single reading (a spike), which an m-of-n alarm filter would delete, and works from
a device's first full window, before any model is fit.

>>> import numpy as np
>>> scores, reasons = ReadingProfile().score_rows(np.array([[0.5, -1.0], [0.2, 9.0]]), ["temp", "rpm"], ts=None)
>>> bool(scores[0] < 1 < 5 < scores[1]), reasons
(True, {1: "rpm 9.0 sd above the device's usual"})
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

LN10 = math.log(10.0)


class ReadingProfile:
    name = "reading_profile"
    consumes = "z"  # the featuriser's per-channel z-scores of the newest reading

    def score_rows(self, Z: np.ndarray, names: list[str], ts: Any, explain_at: float = 1.0,
                   exclude_at: float = math.inf) -> tuple[np.ndarray, dict[int, str]]:
        """(scores (B,), row -> reason for rows scoring >= `explain_at`) of z-scores Z (B, C)."""
        z = np.abs(np.nan_to_num(np.asarray(Z, np.float64)))
        if not z.size:
            return np.zeros(len(z)), {}
        worst = z.argmax(1)
        top = z[np.arange(len(z)), worst]
        log_p = math.log(z.shape[1]) + math.log(2.0) + special.log_ndtr(-top)  # Bonferroni over channels
        scores = np.maximum(-log_p / LN10, 0.0)
        reasons = {}
        for i in np.flatnonzero(scores >= explain_at).tolist():
            side = "above" if Z[i, worst[i]] > 0 else "below"
            reasons[i] = f"{names[worst[i]]} {top[i]:.1f} sd {side} the device's usual"
        return scores, reasons

    def end_chunk(self) -> None:
        """Nothing to fold: the featuriser holds each device's statistics."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: the featuriser holds each device's statistics."""
