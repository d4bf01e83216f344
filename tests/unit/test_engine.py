"""The stream engine: every detector runs where its input fits, warm-up is visible, the champion hands over
on labels, and a warm-up fit freezes models and thresholds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as Event

import numpy as np
import pytest

from pipeline.domains import build_processor
from stream_models import checkpoint
from tests.unit.test_runner_domains import T0, run_in_batches, sensor_readings, small_settings, transactions


def test_the_lstm_classifier_runs_live_over_card_sequences_and_resumes_from_a_checkpoint(tmp_path: Path) -> None:
    settings = small_settings(transactions={"detector": "lstm_classifier", "sequence_length": 4})
    events = transactions(200)
    a, b = run_in_batches("transactions", events, 13, settings), run_in_batches("transactions", events, 200, settings)
    np.testing.assert_array_equal(a[0], b[0])  # sequences, like rows, do not depend on batching
    assert np.isfinite(a[0]).all()

    first = build_processor(settings, "transactions")
    first.process(events[:90])
    checkpoint.save(tmp_path / "c.ckpt", {"engine": first.state_dict()})
    resumed = build_processor(settings, "transactions")
    resumed.load_state_dict(checkpoint.load(tmp_path / "c.ckpt")["engine"])
    np.testing.assert_array_equal(resumed.process(events[90:]).scores, first.process(events[90:]).scores)


def test_halfspace_trees_serves_the_sensors_domain_on_the_newest_reading() -> None:
    settings = small_settings(sensors={"detector": "halfspace_trees", "warmup_fit_epochs": 0,
                                       "learn_after_warmup": True})
    engine = build_processor(settings, "sensors")
    batch = engine.process(sensor_readings(240))
    assert engine.board is not None and engine.board.contenders["halfspace_trees"].consumes == "rows"
    assert np.isfinite(batch.scores[-50:]).all()


def test_events_scored_before_the_threshold_is_armed_are_marked_warming_up() -> None:
    engine = build_processor(small_settings(), "transactions")
    batch = engine.process(transactions(240))
    assert batch.warming_up is not None
    assert batch.warming_up[:64].all(), "the first warmup_events events are warm-up"
    assert not batch.warming_up[-16:].any(), "a threshold is armed by the end"
    champion = batch.contender_flags[engine.detector_name]
    assert not champion[batch.warming_up].any(), "the models raise no alert while warming up"
    early = np.flatnonzero(batch.flags & batch.warming_up)
    assert all(batch.reasons.get(int(i)) for i in early), "alerts during warm-up are the card profile's, with a reason"


def _labelled_stream(n: int) -> tuple[list[Event], list[Event]]:
    """Cards whose frauds are big amounts at one terminal; the labels arrive a day later."""
    rng = np.random.default_rng(5)
    events, labels = [], []
    for i in range(n):
        fraud = i % 25 == 24
        events.append(Event(event_id=f"e{i}", ts=T0 + 60.0 * i, card_id=f"c{i % 40}",
                            terminal_id="t-bad" if fraud else f"t{i % 7}",
                            amount=float(rng.gamma(2.0, 30.0)) * (6.0 if fraud else 1.0)))
        if fraud:
            labels.append(Event(event_id=f"e{i}", label=1, ts=T0 + 60.0 * i + 3_600.0))
    return events, labels


def test_a_label_free_champion_hands_over_to_the_supervised_challenger_once_labels_arrive() -> None:
    settings = small_settings(transactions={
        "detector": "dense_autoencoder", "challengers": ["mlp_classifier"], "auto_promote": True,
        "promote_min_positives": 10, "promote_margin": 0.0, "label_delay_s": 3_600.0, "steps_per_update": 8,
        "batch_size": 64})
    engine = build_processor(settings, "transactions")
    events, labels = _labelled_stream(3_000)
    assert engine.detector_name == "dense_autoencoder"
    for start in range(0, len(events), 100):
        chunk = events[start : start + 100]  # labels revealed by the chunk's end come first, as the runner does
        engine.apply_labels([lb for lb in labels if chunk[0].ts <= lb.ts + 60.0 and lb.ts <= chunk[-1].ts])
        engine.process(chunk)
    assert engine.promotions >= 1
    assert engine.detector_name == "mlp_classifier"


def test_a_classifier_is_not_promoted_on_labels_it_has_not_learned_from_yet() -> None:
    """Labels that reach the worker long before their reveal time (a worker behind its backlog) rate the
    contenders at once, but the classifier learns from each only after the label delay: it takes over once it has
    learned from as many frauds as a promotion needs, not on an untrained net's lucky ranking."""
    settings = small_settings(transactions={
        "detector": "dense_autoencoder", "challengers": ["mlp_classifier"], "auto_promote": True,
        "promote_min_positives": 10, "promote_margin": 0.0, "label_delay_s": 12 * 3_600.0, "steps_per_update": 8,
        "batch_size": 64})
    engine = build_processor(settings, "transactions")
    events, _ = _labelled_stream(3_000)
    frauds_learned_at_promotion = None
    for start in range(0, len(events), 100):
        chunk = events[start : start + 100]
        engine.process(chunk)
        engine.apply_labels([Event(event_id=e.event_id, label=1, ts=e.ts) for e in chunk if e.terminal_id == "t-bad"])
        if engine.detector_name == "mlp_classifier" and frauds_learned_at_promotion is None:
            frauds_learned_at_promotion = len(engine.board.contenders["mlp_classifier"].learner.frauds)
    assert frauds_learned_at_promotion is not None, "the classifier takes over once it has learned enough"
    assert frauds_learned_at_promotion >= 10


def test_a_threshold_reset_by_drift_rearms_from_the_scores_after_the_change() -> None:
    """A drift in every learning chunk (here the amounts double from chunk to chunk) resets the champion's threshold
    each time; it re-learns from the scores after the change at once, so the domain is not left warming up for good."""
    settings = small_settings(transactions={"learn_every": 256, "threshold_warmup": 32, "drift_delta": 0.002})
    engine = build_processor(settings, "transactions")
    events = transactions(2_048)
    for i, e in enumerate(events):
        e.amount *= 2.0 ** (i // 256)
    batches = [engine.process(events[i : i + 256]) for i in range(0, len(events), 256)]
    assert engine.drift_events >= 3, "the drift monitor saw the changes"
    assert np.isfinite(batches[-1].thresholds).all(), "the threshold is armed after each change"
    assert not batches[-1].warming_up.any() and engine.armed(engine.detector_name)


def test_without_labels_the_label_free_champion_keeps_serving() -> None:
    settings = small_settings(transactions={"challengers": ["mlp_classifier"], "auto_promote": True,
                                            "promote_min_positives": 10})
    engine = build_processor(settings, "transactions")
    engine.process(_labelled_stream(2_000)[0])
    assert engine.detector_name == "dense_autoencoder" and engine.promotions == 0


def test_a_warmup_fit_trains_on_the_warmup_then_freezes_model_and_threshold() -> None:
    settings = small_settings(sensors={"warmup_events": 100, "warmup_fit_epochs": 3, "learn_after_warmup": False,
                                       "threshold_warmup": 20})
    engine = build_processor(settings, "sensors")
    readings = [Event(event_id=f"s{i}", ts=T0 + i, device_id="pump",
                      readings={"temp": float(np.sin(i / 5)), "vib": float(np.cos(i / 7))}) for i in range(300)]
    first = engine.process(readings[:100])
    assert first.warming_up.all() and not first.flags.any()
    contender = engine.board.contenders[engine.detector_name]
    assert contender.detector.n_updates > 0, "the warm-up fit trained the model"
    frozen = (contender.detector.n_updates, contender.threshold.threshold)
    assert np.isfinite(frozen[1])
    later = engine.process(readings[100:])
    assert not later.warming_up.any()
    assert (contender.detector.n_updates, contender.threshold.threshold) == frozen


def test_a_domain_that_cannot_feed_a_detector_is_refused_with_its_input_kind() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="window_autoencoder consumes windows"):
        build_processor(small_settings(transactions={"detector": "window_autoencoder"}), "transactions")


def test_by_default_a_label_free_transactions_champion_scores_but_leaves_alerting_to_the_card_profile() -> None:
    engine = build_processor(small_settings(transactions={"label_free_alerts": False}), "transactions")
    batch = engine.process(transactions(600))
    assert engine.detector_name == "dense_autoencoder" and np.isfinite(batch.scores[-100:]).all()
    assert batch.contender_flags["dense_autoencoder"].any(), "its own threshold still flags (for the leaderboard)"
    assert not batch.champion_alerts.any()
    assert all(batch.verdict(int(i))[0] == "card_profile" for i in np.flatnonzero(batch.flags))
