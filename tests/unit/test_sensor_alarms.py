"""Sensor alarm episodes and regime changes (shipped defaults, with thresholds set on held-out warm-up rows so
that the clean part is quiet): a lasting level shift alarms for a bounded time, raises one regime-change event
and the device re-learns its normal."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.simulator import SensorSimulator
from pipeline.domains import build_processor
from pipeline.settings import Settings

SHIFT_AT = 1_000
SETTINGS = Settings.model_validate({"sensors": {"warmup_holdout": 0.25}})


def _shifted_device() -> list[Any]:
    """One device, 3,000 readings without injected faults; from reading 1,000 on, one channel sits 5 sd higher."""
    sim = SensorSimulator(seed=2, n_devices=1, n_steps=3_000, spikes_per_1000=0, level_shifts_per_1000=0,
                          stuck_per_1000=0, collective_per_1000=0)
    events = list(sim.events())
    channel = next(iter(events[0].readings))
    sd = float(np.std([e.readings[channel] for e in events[:SHIFT_AT]]))
    for e in events[SHIFT_AT:]:
        e.readings[channel] += 5 * sd
    return events


def _run(events: list[Any], batch: int) -> tuple[np.ndarray, list[int], Any]:
    engine = build_processor(SETTINGS, "sensors")
    flags, changes = [], []
    for start in range(0, len(events), batch):
        out = engine.process(events[start : start + batch])
        flags.append(out.flags)
        changes += [start + row for row in out.regime_changes]
    return np.concatenate(flags), changes, engine


def test_a_level_shift_alarms_for_a_bounded_time_then_becomes_the_new_normal() -> None:
    events = _shifted_device()
    flags, changes, engine = _run(events, 100)
    settings = SETTINGS.sensors
    assert not flags[: SHIFT_AT].any(), "the clean part raises no alarm"
    assert flags[SHIFT_AT : SHIFT_AT + 100].any(), "the shift alarms"
    assert len(changes) == 1 and engine.regime_changes == 1, "one regime-change event"
    assert changes[0] <= SHIFT_AT + settings.regime_rows + settings.episode_gap_rows
    quiet = flags[changes[0] : changes[0] + 600]
    assert not quiet.any(), "after the regime change the new level is normal"


def test_regime_changes_do_not_depend_on_batching() -> None:
    events = _shifted_device()
    a, b = _run(events, 100), _run(events, 37)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def _short_device(n: int = 300, fault_at: int = 200) -> list[Any]:
    sim = SensorSimulator(seed=5, n_devices=1, n_steps=n, spikes_per_1000=0, level_shifts_per_1000=0,
                          stuck_per_1000=0, collective_per_1000=0)
    events = list(sim.events())
    channel = next(iter(events[0].readings))
    sd = float(np.std([e.readings[channel] for e in events]))
    events[fault_at].readings[channel] += 8 * sd
    return events


def test_a_short_stream_alerts_on_a_spike_before_any_model_is_fit() -> None:
    events = _short_device()
    engine = build_processor(Settings(), "sensors")  # shipped defaults
    batch = engine.process(events)
    assert batch.warming_up[200], "300 readings never end the 400-reading model warm-up"
    assert np.flatnonzero(batch.flags).tolist() == [200], "the spike alone alerts, nothing else"
    assert "sd above the device's usual" in batch.reasons[200]
    assert batch.verdict(200)[0] == "reading_profile"


def test_the_runner_sends_one_alert_when_an_episode_opens_and_one_when_it_ends() -> None:
    from ingest.records import Record
    from ingest.schemas import encode_event
    from sinks.memory_sink import MemorySink
    from tests.unit.test_runner_loop import FakeSource, make_runner

    events = _shifted_device()
    records = [Record("tx", 0, i, -1, e.device_id.encode(), encode_event(e)) for i, e in enumerate(events)]
    sink = MemorySink()
    make_runner(FakeSource(records), sink, processor=build_processor(SETTINGS, "sensors"), max_records=100).run()
    flags, changes, _ = _run(events, 100)
    kinds = [a.episode for a in sink.alerts]
    assert kinds[:2] == ["open", "regime change"] and len(kinds) <= 3 < 100 < flags.sum(), "an episode, not a row each"
    opened, ended = sink.alerts[:2]
    assert opened.event_id == events[int(np.flatnonzero(flags)[0])].event_id
    assert ended.episode_rows == SETTINGS.sensors.regime_rows and ended.episode_start_ts == opened.event_ts
    assert ended.event_ts == events[changes[0]].ts and "new normal" in (ended.reason or "")



def test_once_armed_the_reading_profile_hands_over_to_the_model() -> None:
    """A device's spike alerts from the reading profile while the model warms up; after warm-up, a reading only
    the profile finds rare raises nothing (the model's threshold and alarm rule decide)."""
    events = _short_device(n=1_200, fault_at=200)
    channel = next(iter(events[0].readings))
    sd = float(np.std([e.readings[channel] for e in events[:400]]))
    events[900].readings[channel] += 8 * sd
    batch = build_processor(Settings(), "sensors").process(events)
    assert batch.warming_up[200] and batch.flags[200] and batch.verdict(200)[0] == "reading_profile"
    assert not batch.warming_up[900]
    assert batch.contender_scores["reading_profile"][900] >= Settings().sensors.profile_threshold
    assert not batch.contender_flags["reading_profile"][900]


def test_a_spike_among_a_device_s_first_readings_alerts_and_its_normal_start_does_not() -> None:
    """Before a window of 30 readings exists, a reading is judged against the prediction interval of the few
    before it (Student's t): a large spike at reading 12 alerts, the normal scatter of the first readings does not."""
    events = _short_device(n=300, fault_at=12)
    channel = next(iter(events[0].readings))
    events[12].readings[channel] += 12 * float(np.std([e.readings[channel] for e in events]))  # 20 sd in all
    batch = build_processor(Settings(), "sensors").process(events)
    assert np.flatnonzero(batch.flags[:30]).tolist() == [12]
    assert batch.verdict(12)[0] == "reading_profile" and "sd above the device's usual" in batch.reasons[12]
    assert np.isnan(batch.contender_scores["reading_profile"][:2]).all(), "nothing to compare the first two with"
