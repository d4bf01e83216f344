"""Drift monitor: detection, reported actions, and exact state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from stream_models import checkpoint
from stream_models.drift import DriftActions, DriftEvent, DriftMonitor
from stream_models.errors import ModelError


def _shifted(n_before: int = 2000, n_after: int = 1000, shift: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0.0, 1.0, n_before), rng.normal(shift, 1.0, n_after)]


def test_a_stationary_stream_raises_no_drift():
    monitor = DriftMonitor(page_hinkley=True, ph_delta=0.1)
    assert monitor.update_many(np.random.default_rng(1).normal(0.0, 1.0, 5000)) == []
    assert monitor.position == 5000


def test_a_mean_shift_is_detected_soon_after_it_happens():
    monitor = DriftMonitor()
    events = []
    for batch in np.array_split(_shifted(), 30):
        events += monitor.update_many(batch)
    assert events, "the shift was missed"
    first = events[0]
    assert isinstance(first, DriftEvent) and first.detector == "adwin"
    assert 2000 <= first.position < 2300
    assert monitor.n_detections == len(events)


def test_event_index_points_into_the_batch_and_value_matches():
    values = _shifted()
    monitor = DriftMonitor(page_hinkley=True, ph_threshold=20.0)
    events = monitor.update_many(values)
    assert {e.detector for e in events} == {"adwin", "page_hinkley"}
    for event in events:
        assert values[event.index] == event.value
        assert event.position == event.index


def test_non_finite_values_are_skipped():
    monitor = DriftMonitor()
    assert monitor.update_many(np.array([1.0, np.nan, np.inf, 2.0])) == []
    assert monitor.position == 2


def test_actions_are_reported_as_configured():
    monitor = DriftMonitor(lr_boost_factor=5.0, lr_boost_events=1000, reset_threshold=True)
    assert monitor.actions == DriftActions(lr_boost_factor=5.0, lr_boost_events=1000, reset_threshold=True)
    assert DriftMonitor().actions == DriftActions(1.0, 0, False)
    with pytest.raises(ModelError):
        DriftMonitor(lr_boost_factor=0.0)
    with pytest.raises(ModelError):
        DriftMonitor(not_an_option=1)


@pytest.mark.parametrize("page_hinkley", [False, True])
@pytest.mark.parametrize("cut", [500, 2100, 2600])
def test_restored_monitor_continues_exactly_like_the_original(page_hinkley, cut):
    values = _shifted(n_after=2000, shift=1.0, seed=2)
    original = DriftMonitor(page_hinkley=page_hinkley, ph_threshold=10.0, reset_threshold=True)
    original.update_many(values[:cut])
    state = checkpoint.from_bytes(checkpoint.to_bytes(original.state_dict()))
    restored = DriftMonitor()
    restored.load_state_dict(state)
    assert restored.actions == original.actions
    assert restored.estimation == original.estimation
    assert restored.update_many(values[cut:]) == original.update_many(values[cut:])
    assert restored.position == original.position == values.shape[0]


def test_adwin_state_from_another_river_build_is_rebuilt_by_replaying_recent_values():
    values = _shifted(n_after=200, seed=3)
    original = DriftMonitor(replay_window=10_000)
    original.update_many(values[:1500])
    state = original.state_dict()
    state["river_version"] = "0.0.0"
    restored = DriftMonitor()
    restored.load_state_dict(state)
    assert restored.estimation == pytest.approx(original.estimation)
    assert [e.position for e in restored.update_many(values[1500:])] == [
        e.position for e in original.update_many(values[1500:])
    ]


def test_reset_forgets_the_stream():
    monitor = DriftMonitor()
    monitor.update_many(_shifted())
    monitor.reset()
    assert monitor.position == 0 and monitor.n_detections == 0 and monitor.estimation == 0.0
