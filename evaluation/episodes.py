"""Sensor faults and alarm episodes per device: what a maintenance engineer counts.

An alarm episode opens at a device's alarmed row and closes after `gap` quiet rows of that device (the
engine's `episode_gap_rows`), so one fault whose alarms flicker is one episode. A fault is a run of a
device's labelled rows; it is detected when an episode overlaps it. An episode that overlaps no fault
is a false episode.

>>> import pandas as pd
>>> rows = pd.DataFrame({"entity": ["d"] * 8, "ts": range(8), "alert": [0, 1, 1, 0, 0, 0, 1, 0],
...                      "label": [0, 1, 1, 1, 0, 0, 0, 0]})
>>> episode_scores(rows, gap=2)
{'faults': 1, 'faults_detected': 1, 'episodes': 2, 'false_episodes': 1}
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def runs(mask: np.ndarray, gap: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in `mask`, joining runs separated by fewer than `gap` False rows."""
    idx = np.flatnonzero(np.asarray(mask, bool))
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def episode_scores(frame: pd.DataFrame, gap: int) -> dict[str, int]:
    """Faults, detected faults, alarm episodes and false episodes, summed over the devices (`entity`) of a
    score log with `alert` and `label` columns."""
    out = {"faults": 0, "faults_detected": 0, "episodes": 0, "false_episodes": 0}
    for _, rows in frame.sort_values("ts", kind="stable").groupby("entity", sort=False):
        label = (rows["label"].fillna(0).to_numpy() == 1)
        faults = runs(label)
        episodes = runs(rows["alert"].fillna(False).to_numpy(bool), gap)
        out["faults"] += len(faults)
        out["faults_detected"] += sum(any(s < b and a < e for s, e in episodes) for a, b in faults)
        out["episodes"] += len(episodes)
        out["false_episodes"] += sum(not label[s:e].any() for s, e in episodes)
    return out
