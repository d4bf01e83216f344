"""The per-event score table: a runner observer that records what the engine decided for each event.

One row per event: domain, event_id, entity, ts (event time, epoch s), score (NaN when the event
could not be scored yet), threshold, alert (bool, the alert users receive), suppressed (above the
threshold but held back), warming_up (scored before the champion's threshold was armed), partition,
offset, and per challenger `score__<name>` / `alert__<name>` (and `threshold__<name>` when the batch
carries challenger thresholds), and `detector`: the champion each event was scored under (the batch's
`champions`, else the `detector` argument; `frame(champions)` fills the rows logged without one). The caller adds
`label`.

>>> from types import SimpleNamespace as NS
>>> import numpy as np
>>> log = ScoreLog()
>>> batch = NS(keys=["card1"], scores=np.array([0.9]), thresholds=np.array([0.5]), flags=np.array([True]),
...            suppressed=np.array([False]), contender_scores={}, contender_flags={})
>>> log("transactions", [NS(event_id="e1", ts=1.0)], [NS(partition=0, offset=7)], batch)
>>> row = log.frame().iloc[0]
>>> bool(row["alert"]), bool(row["warming_up"]), int(row["offset"])
(True, False, 7)
>>> log.frame({"transactions": "mlp_classifier"}).iloc[0]["detector"]  # the batch named no champion
'mlp_classifier'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["LOGGED_COLUMNS", "ScoreLog"]

LOGGED_COLUMNS = ["domain", "event_id", "entity", "ts", "score", "threshold", "alert", "suppressed", "warming_up",
                  "partition", "offset", "detector"]


class ScoreLog:
    """Runner observer: one row per scored event, challenger scores as `score__<name>` columns.

    `batch` is the engine's verdict on the events (attributes keys, scores, thresholds, flags,
    suppressed, contender_scores, contender_flags, and optionally warming_up and
    contender_thresholds); `records` are the Kafka records the events came from.
    """

    def __init__(self, on_batch: Callable[[int], None] | None = None) -> None:
        self.parts: list[pd.DataFrame] = []
        self.on_batch = on_batch

    def __call__(self, domain: str, events: Sequence[Any], records: Sequence[Any], batch: Any,
                 detector: str = "") -> None:
        n = len(events)
        warming_up = getattr(batch, "warming_up", None)
        data: dict[str, Any] = {
            "domain": domain,
            "event_id": [e.event_id for e in events],
            "entity": batch.keys,
            "ts": np.fromiter((e.ts for e in events), np.float64, n),
            "score": batch.scores,
            "threshold": batch.thresholds,
            "alert": batch.flags,
            "suppressed": batch.suppressed,
            "warming_up": np.zeros(n, bool) if warming_up is None else np.asarray(warming_up, bool),
            "partition": [r.partition for r in records],
            "offset": [r.offset for r in records],
            "detector": list(getattr(batch, "champions", None) or [detector] * n),
        }
        thresholds = getattr(batch, "contender_thresholds", None) or {}
        for name, scores in batch.contender_scores.items():
            data[f"score__{name}"] = scores
            data[f"alert__{name}"] = batch.contender_flags.get(name, np.zeros(n, bool))
            if name in thresholds:
                data[f"threshold__{name}"] = thresholds[name]
        self.parts.append(pd.DataFrame(data))
        if self.on_batch:
            self.on_batch(n)

    def frame(self, champions: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Every row logged; `champions` (domain -> detector) names the champion of the rows logged without one
        (scored before the engine had its models), each other row keeps the champion it was scored under."""
        if not self.parts:
            return pd.DataFrame(columns=[*LOGGED_COLUMNS, "label"])
        out = pd.concat(self.parts, ignore_index=True)
        blank = out["detector"].astype(str) == ""
        if champions and blank.any():
            out.loc[blank, "detector"] = out.loc[blank, "domain"].map(champions)
        return out
