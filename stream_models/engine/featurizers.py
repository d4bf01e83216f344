"""Featurizers: per-entity state turning events into the inputs detectors consume.

`update(events)` returns (keys, inputs, ready): `inputs` maps an input kind ("rows", "sequences",
"windows"; see stream_models.catalog) to a (B, ...) float32 array, and `ready` (B,) says which
events can be scored (a sensor window needs W readings of its device).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from stream_models.base import RunningMoments
from stream_models.errors import ModelError


class TransactionFeaturizer:
    """Card/terminal feature rows (B, F) and, when asked for, each card's last T rows (B, T, F)."""

    kinds = ("rows", "sequences")

    def __init__(self, label_delay_s: float, sequence_length: int = 0, attributes: Sequence[Any] = ()) -> None:
        from stream_models.transaction_features import (
            AttributeSpec,
            TransactionFeatures,
            TransactionFeaturesConfig,
        )

        # rings start at 4 events per entity and double when a window needs more
        self.features = TransactionFeatures(TransactionFeaturesConfig(
            label_delay_days=label_delay_s / 86_400.0, sequence_length=sequence_length, initial_capacity=4,
            attributes=tuple(a if isinstance(a, AttributeSpec) else AttributeSpec(**a) for a in attributes)))

    @property
    def names(self) -> list[str] | None:
        return list(self.features.feature_names)

    def update(self, events: Sequence[Any]) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        keys, X = self.features.update_many(events)  # X (B, F)
        inputs = {"rows": X}
        if self.features.config.sequence_length:
            inputs["sequences"] = self.features.last_sequences  # (B, T, F)
        return keys, inputs, np.ones(len(keys), dtype=bool)

    def observe_labels(self, labels: Sequence[Any]) -> None:
        self.features.observe_labels([lb.event_id for lb in labels], [int(lb.label) for lb in labels],
                                     [float(lb.ts) for lb in labels])

    def snapshot(self) -> dict[str, Any]:
        return self.features.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.features.restore(state)

    def keys_of(self, partition: int, n_partitions: int) -> list[str]:
        """Cards Kafka's default partitioner puts in `partition` (the topic is keyed by card id)."""
        return self.features.card_ids([partition], n_partitions)

    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        """The cards of one partition (terminal features are not partitioned like cards: they stay per worker)."""
        return self.features.snapshot(card_ids=self.keys_of(partition, n_partitions))

    def restore_partition(self, state: dict[str, Any]) -> None:
        self.features.restore(state, merge_cards=True)

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        self.features.drop_cards(self.keys_of(partition, n_partitions))


class SensorFeaturizer:
    """Per-device normalised windows (B, W, C); "rows" are each window's newest reading (B, C)."""

    kinds = ("windows", "rows", "sequences")

    def __init__(self, window: int, freeze_after: int | None = None, drift_horizon: float | None = None) -> None:
        from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

        self.windows = SensorWindows(SensorWindowsConfig(window=window, freeze_after=freeze_after,
                                                         drift_horizon=drift_horizon))

    @property
    def names(self) -> list[str] | None:
        return list(self.windows.channels) if self.windows.channels else None

    def update(self, events: Sequence[Any]) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        keys, X, ready = self.windows.update_many(events)  # X (B, W, C)
        # a device's recent readings are its sequence; a row detector reads the newest one; "z" feeds the
        # reading profile (the newest reading against the device's statistics before it, and their count)
        inputs = {"windows": X, "sequences": X, "rows": np.ascontiguousarray(X[:, -1, :]),
                  "z": np.stack([self.windows.last_z, self.windows.last_n], axis=-1)}
        return keys, inputs, ready

    def observe_labels(self, labels: Sequence[Any]) -> None:
        """Sensor features do not use labels."""

    def forget(self, keys: Collection[str]) -> None:
        """These devices start afresh: no window, no normalisation statistics."""
        self.windows.forget(keys)

    def snapshot(self) -> dict[str, Any]:
        return self.windows.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.windows.restore(state)

    def _partitioned(self, n_partitions: int) -> Any:
        if self.windows.config.num_partitions != n_partitions:
            self.windows.config = replace(self.windows.config, num_partitions=n_partitions)
        return self.windows

    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        return self._partitioned(n_partitions).snapshot(partitions=[partition])

    def restore_partition(self, state: dict[str, Any]) -> None:
        self.windows.restore(state, merge=True)

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        self._partitioned(n_partitions).drop_partitions([partition])


class RecordFeaturizer:
    """Ready-made feature vectors as rows (B, F), in the order of `names` (the first record's, sorted, unless
    given). A missing feature is filled with its running mean; extra ones are ignored."""

    kinds = ("rows",)

    def __init__(self, names: Sequence[str] = ()) -> None:
        self._names = list(names) or None
        self._moments = RunningMoments(len(self._names)) if self._names else None

    @property
    def names(self) -> list[str] | None:
        return list(self._names) if self._names else None

    def update(self, events: Sequence[Any]) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        if self._names is None and events:
            self._names = sorted(events[0].features)
            self._moments = RunningMoments(len(self._names))
        assert self._names is not None and self._moments is not None
        nan = float("nan")
        X = np.array([[e.features.get(n, nan) for n in self._names] for e in events], dtype=np.float64)
        X = X.reshape(len(events), len(self._names))
        missing = np.isnan(X)
        if missing.any():
            X = np.where(missing, self._moments.mean, X)
        self._moments.update(X)
        return [e.entity_id for e in events], {"rows": X.astype(np.float32)}, np.ones(len(events), dtype=bool)

    def observe_labels(self, labels: Sequence[Any]) -> None:
        """Ready-made features do not use labels."""

    def snapshot(self) -> dict[str, Any]:
        return {"names": list(self._names or []),
                "moments": self._moments.state_dict() if self._moments is not None else None}

    def restore(self, state: dict[str, Any]) -> None:
        self._names = list(state["names"]) or None
        self._moments = None
        if self._names and state["moments"] is not None:
            self._moments = RunningMoments(len(self._names))
            self._moments.load_state_dict(state["moments"])

    # records carry no per-entity state: a partition moving between workers takes nothing with it
    def snapshot_partition(self, partition: int, n_partitions: int) -> dict[str, Any]:
        return {}

    def restore_partition(self, state: dict[str, Any]) -> None:
        """Nothing per entity to restore."""

    def drop_partition(self, partition: int, n_partitions: int) -> None:
        """Nothing per entity to drop."""


def check_inputs(domain: str, wanted: Collection[str], offered: Collection[str]) -> None:
    """A clear error when a detector needs an input kind this domain cannot give."""
    missing = sorted(set(wanted) - set(offered))
    if missing:
        raise ModelError(f"the {domain} domain cannot feed detectors that consume {missing}; "
                         f"it gives {sorted(offered)}")
