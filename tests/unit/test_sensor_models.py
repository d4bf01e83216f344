"""Window models (dense AE, LSTM AE, LSTM forecaster), the alarm filter and the sensor detector."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stream_models.alarm_filter import AlarmFilter, AlarmFilterConfig
from stream_models.base import Detector
from stream_models.errors import ModelError
from stream_models.lstm_autoencoder import LSTMAutoencoder, LSTMAutoencoderConfig
from stream_models.lstm_forecaster import LSTMForecaster, LSTMForecasterConfig
from stream_models.sensor_autoencoder import WindowAutoencoder, WindowAutoencoderConfig
from stream_models.sensor_detector import SensorDetector
from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

W, C = 12, 3
CHANNELS = ["flow", "pressure", "vibration"]


def make(kind: str, seed: int = 0):
    common = dict(window=W, n_channels=C, seed=seed, lr=1e-2)
    if kind == "dense_ae":
        return WindowAutoencoder(WindowAutoencoderConfig(**common, hidden=32, latent=4), CHANNELS)
    if kind == "lstm_ae":
        return LSTMAutoencoder(LSTMAutoencoderConfig(**common, hidden=16, latent=8), CHANNELS)
    return LSTMForecaster(LSTMForecasterConfig(**common, hidden=16), CHANNELS)


KINDS = ["dense_ae", "lstm_ae", "lstm_forecaster"]


def normal_windows(n: int, seed: int = 0) -> np.ndarray:
    """(n, W, C) windows of three phase-shifted sines with small noise."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    t = start + np.arange(W)[None, :, None] * 0.4
    X = np.sin(t + np.array([0.0, 2.0, 4.0])[None, None, :]) + rng.normal(0, 0.05, size=(n, W, C))
    return X.astype(np.float32)


@pytest.fixture(scope="module", params=KINDS)
def trained(request: pytest.FixtureRequest):
    det = make(request.param)
    det.fit(normal_windows(128), epochs=30)
    return det


@pytest.mark.parametrize("kind", KINDS)
def test_implements_the_detector_protocol_and_scores_before_learning(kind: str) -> None:
    det = make(kind)
    assert isinstance(det, Detector)
    scores = det.score_many(normal_windows(5))
    assert scores.shape == (5,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    assert det.score_many(np.zeros((0, W, C), np.float32)).shape == (0,)


@pytest.mark.parametrize("kind", KINDS)
def test_score_and_learn_do_not_mutate_input(kind: str) -> None:
    det = make(kind)
    X = normal_windows(8)
    before = X.copy()
    det.score_many(X)
    det.learn_many(X)
    det.explain_many(X)
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_clones_score_identically_and_learn_identically(kind: str) -> None:
    a, b = make(kind, seed=3), make(kind, seed=3)
    X = normal_windows(40)
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X))
    a.learn_many(X)
    b.learn_many(X)
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X))
    assert not np.array_equal(make(kind, seed=4).score_many(X), make(kind, seed=3).score_many(X))


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip_restores_scores_and_training(kind: str) -> None:
    a = make(kind)
    X = normal_windows(64)
    a.learn_many(X)
    b = make(kind)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X))
    a.learn_many(X)
    b.learn_many(X)  # optimizer and shuffling state came along too
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X))


def test_state_of_another_model_or_config_is_refused() -> None:
    with pytest.raises(ModelError):
        make("lstm_ae").load_state_dict(make("dense_ae").state_dict())
    other = WindowAutoencoder(WindowAutoencoderConfig(window=W, n_channels=C, hidden=8, latent=2), CHANNELS)
    with pytest.raises(ModelError):
        other.load_state_dict(make("dense_ae").state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_learning_lowers_the_error_on_normal_windows(kind: str) -> None:
    det = make(kind)
    X = normal_windows(128)
    before = det.score_many(X).mean()
    det.fit(X, epochs=20)
    assert det.score_many(X).mean() < 0.6 * before


def test_anomalous_windows_score_higher_and_explain_the_faulty_channel(trained) -> None:
    normal = normal_windows(64, seed=1)
    faulty = normal.copy()
    faulty[:, -3:, 1] += 3.0  # pressure jumps in the last steps
    s_norm, s_fault = trained.score_many(normal), trained.score_many(faulty)
    assert s_fault.min() > np.quantile(s_norm, 0.99)
    top = trained.explain_many(faulty[:4], k=2)
    assert all(len(row) == 2 and row[0][0] == "pressure" and row[0][1] >= row[1][1] for row in top)


def test_learn_many_with_labels_learns_from_normal_rows_only() -> None:
    a, b = make("dense_ae"), make("dense_ae")
    X = normal_windows(32)
    junk = np.full_like(X, 50.0)
    a.learn_many(np.concatenate([X, junk]), y=np.r_[np.zeros(32), np.ones(32)])
    b.learn_many(X)
    np.testing.assert_array_equal(a.score_many(X), b.score_many(X))


def test_single_event_methods_match_batches() -> None:
    det = make("lstm_forecaster")
    X = normal_windows(3)
    assert det.score_one(X[0]) == pytest.approx(det.score_many(X[:1])[0])
    as_dict = {name: X[0, :, j].tolist() for j, name in enumerate(CHANNELS)}
    assert det.score_one(as_dict) == pytest.approx(det.score_many(X[:1])[0], rel=1e-6)


def test_wrong_window_shape_is_refused() -> None:
    with pytest.raises(ModelError):
        make("dense_ae").score_many(np.zeros((2, W + 1, C), np.float32))


def test_forecaster_scores_only_the_last_step() -> None:
    det = make("lstm_forecaster")
    det.fit(normal_windows(128), epochs=30)
    X = normal_windows(16, seed=2)
    early = X.copy()
    early[:, 0, :] += 5.0  # the oldest reading is only context
    late = X.copy()
    late[:, -1, :] += 5.0
    assert det.score_many(late).mean() > 10 * det.score_many(X).mean()
    assert det.score_many(early).mean() < det.score_many(late).mean()


# ----------------------------------------------------------------- alarm filter
def test_alarm_needs_m_of_the_last_n_flags() -> None:
    f = AlarmFilter(AlarmFilterConfig(m=2, n=3))
    assert f.update_many(["d"] * 6, [1, 0, 0, 1, 0, 1]).tolist() == [False, False, False, False, False, True]


def test_hysteresis_keeps_a_dipping_alarm_up() -> None:
    flags = [1, 1, 1, 0, 1, 0, 0, 0, 0]
    plain = AlarmFilter(AlarmFilterConfig(m=3, n=4)).update_many(["d"] * 9, flags)
    held = AlarmFilter(AlarmFilterConfig(m=3, n=4, m_off=0)).update_many(["d"] * 9, flags)
    assert plain.tolist() == [False, False, True, True, True, False, False, False, False]
    assert held.tolist() == [False, False, True, True, True, True, True, True, False]


def test_alarm_filter_keeps_devices_apart_and_batches_equal_one_by_one() -> None:
    rng = np.random.default_rng(0)
    keys = [f"d{k}" for k in rng.integers(0, 3, size=200)]
    flags = rng.random(200) < 0.5
    cfg = AlarmFilterConfig(m=3, n=5, m_off=1)
    batch = AlarmFilter(cfg).update_many(keys, flags)
    single = AlarmFilter(cfg)
    one = np.concatenate([single.update_many([k], [f]) for k, f in zip(keys, flags, strict=True)])
    np.testing.assert_array_equal(batch, one)
    for d in {"d0", "d1", "d2"}:
        idx = [i for i, k in enumerate(keys) if k == d]
        np.testing.assert_array_equal(AlarmFilter(cfg).update_many([d] * len(idx), flags[idx]), batch[idx])


def test_alarm_filter_snapshot_restores_its_history() -> None:
    a = AlarmFilter(AlarmFilterConfig(m=2, n=3))
    a.update_many(["d"], [True])
    b = AlarmFilter(AlarmFilterConfig(m=2, n=3))
    b.restore(a.snapshot())
    assert b.update_many(["d"], [True]).tolist() == a.update_many(["d"], [True]).tolist() == [True]


# ----------------------------------------------------------------- sensor detector
class FixedThreshold:
    def __init__(self, value: float) -> None:
        self.threshold = value

    def classify_many(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold


def sensor_events(n: int, start: int = 0, jump_at: int | None = None) -> list[SimpleNamespace]:
    out = []
    for i in range(start, start + n):
        base = np.sin(np.array([0.0, 2.0, 4.0]) + i * 0.4)
        if jump_at is not None and i >= jump_at:
            base = base + np.array([0.0, 6.0, 0.0])
        out.append(
            SimpleNamespace(
                event_id=str(i),
                ts=float(i),
                device_id="pump-1",
                readings=dict(zip(CHANNELS, base.tolist(), strict=True)),
            )
        )
    return out


def fitted_detector(learn: bool) -> tuple[SensorDetector, WindowAutoencoder]:
    windows = SensorWindows(SensorWindowsConfig(window=W, channels=tuple(CHANNELS), freeze_after=300))
    _, X, ready = windows.update_many(sensor_events(300))
    model = make("dense_ae")
    model.fit(X[ready], epochs=30)
    threshold = FixedThreshold(5 * float(model.score_many(X[ready]).max()))
    return SensorDetector(
        windows, model, threshold, AlarmFilter(AlarmFilterConfig(m=2, n=3)), learn=learn, quiet_rows=5
    ), model


def test_sensor_detector_raises_a_filtered_alarm_on_a_fault_with_explanation() -> None:
    det, _ = fitted_detector(learn=False)
    quiet = det.process(sensor_events(20, start=300))
    assert not quiet.alarms.any() and np.isfinite(quiet.scores).all()
    fault = det.process(sensor_events(10, start=320, jump_at=322))
    assert not fault.alarms[:2].any() and fault.alarms[-3:].all()
    assert fault.flags.sum() >= fault.alarms.sum()
    assert all(row[0][0] == "pressure" for row in fault.explanations)
    assert not fault.learned.any()


def test_sensor_detector_learns_only_from_quiet_unflagged_rows() -> None:
    det, model = fitted_detector(learn=True)
    before = model.n_updates
    calm = det.process(sensor_events(20, start=300))
    assert calm.learned.all() and model.n_updates > before
    fault = det.process(sensor_events(10, start=320, jump_at=320))
    assert not (fault.learned & fault.flags).any()
    after_fault = det.process(sensor_events(3, start=330))
    assert not after_fault.learned.any()  # still inside the quiet period after the last flag


def test_detector_and_filter_state_survive_a_checkpoint_file(tmp_path) -> None:
    from stream_models import checkpoint

    det = make("lstm_forecaster")
    det.learn_many(normal_windows(32))
    filt = AlarmFilter(AlarmFilterConfig(m=2, n=3))
    filt.update_many(["d"], [True])
    checkpoint.save(tmp_path / "ckpt.pt", {"model": det.state_dict(), "alarms": filt.snapshot()})
    state = checkpoint.load(tmp_path / "ckpt.pt")
    det2 = make("lstm_forecaster")
    det2.load_state_dict(state["model"])
    filt2 = AlarmFilter(AlarmFilterConfig(m=2, n=3))
    filt2.restore(state["alarms"])
    X = normal_windows(8, seed=5)
    np.testing.assert_array_equal(det.score_many(X), det2.score_many(X))
    assert filt2.update_many(["d"], [True]).tolist() == [True]
