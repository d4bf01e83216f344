"""SensorWindows: windows, normalisation, exact batch == one-by-one, bounds, snapshots."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig, partition_of

CHANNELS = ("a", "b")


def ev(i: int, device: str, a: float, b: float | None = None, ts: float | None = None) -> SimpleNamespace:
    readings = {"a": a} if b is None else {"a": a, "b": b}
    return SimpleNamespace(
        event_id=str(i), ts=float(i if ts is None else ts), device_id=device, readings=readings
    )


def stream(n: int, devices: int, seed: int = 0, missing: bool = False) -> list[SimpleNamespace]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = None if missing and rng.random() < 0.2 else float(rng.normal(5, 2))
        out.append(
            ev(i, f"d{rng.integers(devices)}", float(rng.normal(0, 1) + i * 0.01), b, ts=i + rng.random())
        )
    return out


def one_by_one(sw: SensorWindows, events: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    parts = [sw.update_many([e]) for e in events]
    return (
        [k for p in parts for k in p[0]],
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def batched(sw: SensorWindows, events: list, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    parts = [sw.update_many(events[i : i + size]) for i in range(0, len(events), size)]
    return (
        [k for p in parts for k in p[0]],
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


CONFIGS = [
    SensorWindowsConfig(window=4, channels=CHANNELS),
    SensorWindowsConfig(window=3, channels=CHANNELS, freeze_after=5, drift_horizon=50.0),
    SensorWindowsConfig(window=3, channels=CHANNELS, max_devices=2),
    SensorWindowsConfig(window=3, channels=CHANNELS, ttl_s=6.0),
    SensorWindowsConfig(window=2, channels=CHANNELS, normalize=False, max_devices=3, ttl_s=10.0),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("size", [2, 7, 64])
def test_batches_equal_one_by_one_exactly(config: SensorWindowsConfig, size: int) -> None:
    events = stream(120, devices=4, missing=True)
    k1, X1, r1 = one_by_one(SensorWindows(config), events)
    k2, X2, r2 = batched(SensorWindows(config), events, size)
    assert k1 == k2
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("size", [1, 5, 64])
@pytest.mark.parametrize("drift_horizon", [None, 30.0])
def test_frozen_statistics_take_the_one_pass_path_with_identical_windows_and_state(
    size: int, drift_horizon: float | None
) -> None:
    """After warm-up every device's statistics are frozen and a batch is featurised in one pass instead of rank by
    rank: windows, z-scores, readiness and the saved state are the same bit for bit (many ranks per device, more
    than a window's worth of them, and missing channels included)."""
    config = SensorWindowsConfig(window=4, channels=CHANNELS, freeze_after=2, drift_horizon=drift_horizon)
    events = stream(400, devices=3, missing=True)
    fast, by_rank = SensorWindows(config), SensorWindows(config)
    by_rank._frozen = lambda slots: np.zeros(len(slots), bool)  # type: ignore[method-assign]
    one_pass_rows = []
    one_pass = fast._apply_frozen
    fast._apply_frozen = lambda rows, *args: one_pass_rows.append(len(rows)) or one_pass(rows, *args)  # type: ignore
    for i in range(0, len(events), size):
        k1, X1, r1 = fast.update_many(events[i : i + size])
        k2, X2, r2 = by_rank.update_many(events[i : i + size])
        assert k1 == k2
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(fast.last_z, by_rank.last_z)
        np.testing.assert_array_equal(fast.last_n, by_rank.last_n)
    assert sum(one_pass_rows) > len(events) / 2
    a, b = fast.snapshot(), by_rank.snapshot()
    assert a["devices"] == b["devices"]
    for name in ("buf", "pos", "count", "n", "mean", "m2", "ckx", "last_ts"):
        np.testing.assert_array_equal(a[name], b[name])


@settings(max_examples=40, deadline=None)
@given(
    devices=st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=30),
    size=st.integers(1, 30),
    max_devices=st.integers(1, 3),
)
def test_batches_equal_one_by_one_for_any_device_order(
    devices: list[str], size: int, max_devices: int
) -> None:
    events = [ev(i, d, float(i % 7), float(i * 3 % 5)) for i, d in enumerate(devices)]
    config = SensorWindowsConfig(window=3, channels=CHANNELS, max_devices=max_devices)
    _, X1, r1 = one_by_one(SensorWindows(config), events)
    _, X2, r2 = batched(SensorWindows(config), events, size)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(r1, r2)


def test_window_holds_last_w_readings_oldest_first_and_ready_flag() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=3, channels=CHANNELS, normalize=False))
    keys, X, ready = sw.update_many([ev(i, "d", float(i), float(10 * i)) for i in range(5)])
    assert keys == ["d"] * 5
    assert X.shape == (5, 3, 2) and X.dtype == np.float32
    assert ready.tolist() == [False, False, True, True, True]
    assert X[4, :, 0].tolist() == [2.0, 3.0, 4.0]
    assert X[4, :, 1].tolist() == [20.0, 30.0, 40.0]


def test_devices_keep_separate_windows() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=2, channels=CHANNELS, normalize=False))
    _, X, ready = sw.update_many(
        [ev(0, "p", 1, 1), ev(1, "q", 100, 100), ev(2, "p", 2, 2), ev(3, "q", 200, 200)]
    )
    assert ready.tolist() == [False, False, True, True]
    assert X[2, :, 0].tolist() == [1.0, 2.0] and X[3, :, 0].tolist() == [100.0, 200.0]


def test_normalisation_uses_running_mean_and_std_as_of_each_event() -> None:
    values = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    sw = SensorWindows(SensorWindowsConfig(window=2, channels=("a",)))
    _, X, _ = sw.update_many(
        [
            SimpleNamespace(event_id=str(i), ts=float(i), device_id="d", readings={"a": v})
            for i, v in enumerate(values)
        ]
    )
    seen = values[:4]
    np.testing.assert_allclose(X[3, :, 0], (values[2:4] - seen.mean()) / seen.std(), rtol=1e-6)


def test_frozen_statistics_stop_moving_after_warmup() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=1, channels=("a",), freeze_after=3))
    warm = [
        SimpleNamespace(event_id=str(i), ts=float(i), device_id="d", readings={"a": v})
        for i, v in enumerate([1.0, 2.0, 3.0])
    ]
    sw.update_many(warm)
    _, X, _ = sw.update_many([SimpleNamespace(event_id="9", ts=9.0, device_id="d", readings={"a": 1000.0})])
    assert X[0, 0, 0] == pytest.approx((1000.0 - 2.0) / np.std([1.0, 2.0, 3.0]), rel=1e-6)


def test_drift_horizon_widens_the_scale_of_trending_channels() -> None:
    events = [ev(i, "d", float(i), float(i % 2)) for i in range(100)]
    plain = SensorWindows(SensorWindowsConfig(window=1, channels=CHANNELS, freeze_after=100))
    drift = SensorWindows(
        SensorWindowsConfig(window=1, channels=CHANNELS, freeze_after=100, drift_horizon=100.0)
    )
    plain.update_many(events)
    drift.update_many(events)
    later = [ev(200, "d", 200.0, 1.0)]
    _, Xp, _ = plain.update_many(later)
    _, Xd, _ = drift.update_many(later)
    assert abs(Xd[0, 0, 0]) < abs(Xp[0, 0, 0]) / 2  # the trending channel reads much less anomalous
    assert Xd[0, 0, 1] == pytest.approx(Xp[0, 0, 1], rel=1e-2)  # a flat channel is barely touched


def test_missing_channel_repeats_the_device_mean() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=2, channels=CHANNELS, normalize=False))
    _, X, _ = sw.update_many([ev(0, "d", 1.0, 4.0), ev(1, "d", 3.0, None)])
    assert X[1, :, 1].tolist() == [4.0, 4.0]


def test_channels_are_discovered_from_the_first_event() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=2))
    _, X, _ = sw.update_many(
        [SimpleNamespace(event_id="0", ts=0.0, device_id="d", readings={"z": 1.0, "m": 2.0})]
    )
    assert sw.channels == ["m", "z"] and X.shape == (1, 2, 2)


def test_lru_bound_evicts_least_recently_seen_device() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=2, channels=CHANNELS, max_devices=2))
    sw.update_many([ev(0, "a", 1, 1), ev(1, "b", 1, 1), ev(2, "a", 1, 1), ev(3, "c", 1, 1)])
    assert len(sw) == 2 and "a" in sw and "c" in sw and "b" not in sw
    _, _, ready = sw.update_many([ev(4, "b", 1, 1)])
    assert not ready[0]  # b starts over


def test_ttl_forgets_silent_devices() -> None:
    sw = SensorWindows(SensorWindowsConfig(window=2, channels=CHANNELS, ttl_s=10.0))
    sw.update_many([ev(0, "old", 1, 1, ts=0.0), ev(1, "old", 1, 1, ts=1.0), ev(2, "new", 1, 1, ts=50.0)])
    assert "old" not in sw and "new" in sw
    _, _, ready = sw.update_many([ev(3, "old", 1, 1, ts=51.0)])
    assert not ready[0]


def test_snapshot_restore_continues_identically() -> None:
    config = SensorWindowsConfig(window=3, channels=CHANNELS, freeze_after=20)
    events = stream(80, devices=3)
    a = SensorWindows(config)
    a.update_many(events[:50])
    b = SensorWindows(config)
    b.restore(a.snapshot())
    _, Xa, ra = a.update_many(events[50:])
    _, Xb, rb = b.update_many(events[50:])
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ra, rb)


def test_partition_snapshot_moves_only_that_partitions_devices() -> None:
    config = SensorWindowsConfig(window=3, channels=CHANNELS, num_partitions=4)
    events = stream(200, devices=12)
    src = SensorWindows(config)
    src.update_many(events)
    part = partition_of("d0", 4)
    moved = [d for d in (f"d{i}" for i in range(12)) if partition_of(d, 4) == part]
    dst = SensorWindows(config)
    dst.restore(src.snapshot(partitions=[part]), merge=True)
    assert sorted(d for d in moved if d in src) == sorted(dst.snapshot()["devices"])
    later = [e for e in stream(40, devices=12, seed=1) if e.device_id in moved]
    _, Xs, _ = src.update_many(later)
    _, Xd, _ = dst.update_many(later)
    np.testing.assert_array_equal(Xs, Xd)
    src.drop_partitions([part])
    assert not any(d in src for d in moved)


def test_update_many_does_not_mutate_events_and_handles_empty_batch() -> None:
    sw = SensorWindows(replace(CONFIGS[0]))
    events = [ev(0, "d", 1.0, 2.0)]
    sw.update_many(events)
    assert events[0].readings == {"a": 1.0, "b": 2.0}
    keys, X, ready = sw.update_many([])
    assert keys == [] and X.shape == (0, 4, 2) and ready.shape == (0,)


def test_snapshot_survives_a_checkpoint_file(tmp_path) -> None:
    from stream_models import checkpoint

    config = SensorWindowsConfig(
        window=3, channels=CHANNELS, freeze_after=10, drift_horizon=20.0, num_partitions=2
    )
    events = stream(60, devices=3)
    a = SensorWindows(config)
    a.update_many(events[:40])
    checkpoint.save(tmp_path / "ckpt.pt", {"sensor_windows": a.snapshot()})
    b = SensorWindows(config)
    b.restore(checkpoint.load(tmp_path / "ckpt.pt")["sensor_windows"])
    _, Xa, _ = a.update_many(events[40:])
    _, Xb, _ = b.update_many(events[40:])
    np.testing.assert_array_equal(Xa, Xb)
