"""Domain processors: scores do not depend on poll sizes, checkpoints resume mid-chunk, challengers are rated."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as Event
from typing import Any

import numpy as np
import pytest

from pipeline.domains import build_processor
from pipeline.settings import Settings, load_settings
from stream_models import checkpoint
from tests.small_models import SMALL_PARAMS

T0 = 1.75e9


def small_settings(**sections: Any) -> Settings:
    tiny = {"warmup_events": 64, "threshold_warmup": 32, "learn_every": 16, "params": SMALL_PARAMS, "auto_promote": False, "threshold_window": 200, "threshold_quantile": 0.95}
    return load_settings(
        runner={"domain": "all", "device": "cpu"},
        transactions={**tiny, **sections.get("transactions", {})},
        sensors={**tiny, "window": 4, "quiet_rows": 3, **sections.get("sensors", {})},
    )


def transactions(n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [
        Event(event_id=f"t{i}", ts=T0 + 600.0 * i, card_id=f"c{i % 9}", terminal_id=f"m{i % 4}",
              amount=float(rng.gamma(2.0, 30.0)) * (20.0 if i % 37 == 36 else 1.0))
        for i in range(n)
    ]


def sensor_readings(n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fault = 3.0 if 150 <= i < 170 else 0.0
        out.append(Event(event_id=f"s{i}", ts=T0 + i, device_id=f"d{i % 2}",
                         readings={"temp": float(rng.normal() + fault), "vib": float(rng.normal())}))
    return out


def run_in_batches(domain: str, events: list[Any], size: int, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    processor = build_processor(settings, domain)
    scores, flags = [], []
    for start in range(0, len(events), size):
        batch = processor.process(events[start : start + size])
        scores.append(batch.scores)
        flags.append(batch.flags)
    return np.concatenate(scores), np.concatenate(flags)


def explained_in_batches(domain: str, events: list[Any], size: int, settings: Settings) -> tuple[dict[int, Any],
                                                                                                set[int]]:
    """The explanations by place in the stream, and the places that raised an alert (a flagged transaction, a
    sensor alarm episode's first row)."""
    processor, explained, alerting = build_processor(settings, domain), {}, set()
    for start in range(0, len(events), size):
        batch = processor.process(events[start : start + size])
        explained.update({start + i: e for i, e in batch.explanations.items()})
        rows = [i for i, kind, _ in batch.episodes if kind == "open"] if batch.per_episode else \
            np.flatnonzero(batch.flags).tolist()
        alerting.update(start + i for i in rows)
    return explained, alerting


@pytest.mark.parametrize(("domain", "make"), [("transactions", transactions), ("sensors", sensor_readings)])
def test_every_alert_is_explained_the_same_however_the_stream_is_cut_into_batches(domain: str, make: Any) -> None:
    events, settings = make(240), small_settings()
    (by_seven, alerting), (whole, _) = (explained_in_batches(domain, events, n, settings) for n in (7, 240))
    assert alerting, "the injected anomalies should raise alerts"
    assert set(whole) == alerting and all(whole.values()), "each alert, and only an alert, has its top features"
    assert by_seven == whole


@pytest.mark.parametrize(("domain", "make"), [("transactions", transactions), ("sensors", sensor_readings)])
def test_scores_and_alerts_do_not_depend_on_how_the_stream_is_cut_into_batches(domain: str, make: Any) -> None:
    events, settings = make(240), small_settings()
    scores_7, flags_7 = run_in_batches(domain, events, 7, settings)
    scores_50, flags_50 = run_in_batches(domain, events, 50, settings)
    scores_all, flags_all = run_in_batches(domain, events, 240, settings)

    np.testing.assert_array_equal(scores_7, scores_50)
    np.testing.assert_array_equal(scores_7, scores_all)
    np.testing.assert_array_equal(flags_7, flags_50)
    np.testing.assert_array_equal(flags_7, flags_all)
    assert np.isfinite(scores_7[-100:]).all()
    assert flags_7.any(), "the injected anomalies should raise at least one alert"


@pytest.mark.parametrize(("domain", "make"), [("transactions", transactions), ("sensors", sensor_readings)])
def test_a_checkpoint_taken_mid_chunk_resumes_with_identical_scores(domain: str, make: Any, tmp_path: Path) -> None:
    events, settings = make(200), small_settings()
    reference = build_processor(settings, domain)
    reference.process(events[:90])  # 90 is not a multiple of learn_every: a chunk is pending
    checkpoint.save(tmp_path / "c.pt", {"state": reference.state_dict()})

    resumed = build_processor(settings, domain)
    resumed.load_state_dict(checkpoint.load(tmp_path / "c.pt")["state"])
    expected = reference.process(events[90:])
    got = resumed.process(events[90:])
    np.testing.assert_array_equal(expected.scores, got.scores)
    np.testing.assert_array_equal(expected.flags, got.flags)


def test_challengers_are_scored_but_only_the_champion_alerts_and_labels_rate_them() -> None:
    settings = small_settings(sensors={"detector": "lstm_autoencoder", "challengers": ["window_autoencoder"]})
    processor = build_processor(settings, "sensors")
    events = sensor_readings(240)
    batch = processor.process(events)

    assert set(batch.contender_scores) == {"lstm_autoencoder", "window_autoencoder", "reading_profile"}
    np.testing.assert_array_equal(batch.contender_scores["lstm_autoencoder"], batch.scores)
    assert np.isfinite(batch.contender_scores["window_autoencoder"][-50:]).all()
    assert processor.detector_name == "lstm_autoencoder"
    labels = [Event(event_id=e.event_id, label=int(150 <= i < 170), ts=T0 + 500) for i, e in enumerate(events)]
    processor.apply_labels(labels)
    board = {row["detector"]: row for row in processor.board.leaderboard()}
    assert board["lstm_autoencoder"]["champion"] and not board["window_autoencoder"]["champion"]
    assert board["window_autoencoder"]["positives"] == 20
    assert 0.0 <= board["window_autoencoder"]["roc_auc"] <= 1.0

    processor.board.promote("window_autoencoder")
    assert processor.detector_name == "window_autoencoder"


def test_an_unknown_detector_name_is_a_config_error_naming_the_setting() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="transactions.detector"):
        build_processor(small_settings(transactions={"detector": "magic"}), "transactions")
    with pytest.raises(ConfigError, match="consumes windows"):  # a sensor model cannot read transactions
        build_processor(small_settings(transactions={"challengers": ["lstm_forecaster"]}), "transactions")


def test_catalog_detectors_serve_as_transaction_challengers() -> None:
    from stream_models.engine import detector_names

    assert {"dense_autoencoder", "halfspace_trees", "fraud_detector", "mlp_classifier"} <= set(detector_names("transactions"))
    settings = small_settings(transactions={"challengers": ["halfspace_trees", "fraud_detector"]})
    processor = build_processor(settings, "transactions")
    batch = processor.process(transactions(150))
    for name in ("halfspace_trees", "fraud_detector"):
        assert np.isfinite(batch.contender_scores[name]).all()
    assert processor.board.contenders["fraud_detector"].learner.config.supervised
    assert not processor.board.contenders["halfspace_trees"].learner.config.supervised


def test_label_free_models_can_learn_less_than_the_supervised_ones() -> None:
    """`label_free_steps_per_update` sets the replay steps of the detectors that do not learn from labels (the
    transactions autoencoder); the supervised challenger keeps `steps_per_update`."""
    def steps(**learning: Any) -> dict[str, int]:
        settings = small_settings(transactions={"challengers": ["mlp_classifier"], "steps_per_update": 4,
                                                "label_delay_s": 0.0, **learning})
        processor = build_processor(settings, "transactions")
        processor.process(transactions(400))
        processor.apply_labels([Event(event_id=f"t{i}", ts=T0 + 600.0 * i + 1.0, label=int(i % 37 == 36))
                                for i in range(400)])
        processor.process(transactions(400, seed=1))
        return {name: det.n_steps for name, det in processor.detectors().items()}

    same, fewer = steps(label_free_steps_per_update=None), steps(label_free_steps_per_update=1)
    assert same["mlp_classifier"] == fewer["mlp_classifier"] > 0
    assert same["dense_autoencoder"] == 4 * fewer["dense_autoencoder"] > 0
