"""The card profile's cold-start alerts: rare amounts alert from a card's first transactions, with the
reason, while the learned models still warm up; ordinary streams stay quiet."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as Event

import numpy as np

from pipeline.domains import build_processor
from pipeline.settings import Settings
from stream_models import checkpoint
from stream_models.card_profile import CardProfile

T0 = 1.7e9


def _stream(n: int = 600, cards: int = 30, spikes: int = 12, seed: int = 3) -> tuple[list[Event], set[str]]:
    """`n` transactions over 10 days, typical amount about 27; `spikes` of them 5,000-9,999 (each on a card
    that has made at least 3 ordinary purchases)."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(T0, T0 + 10 * 86_400, n))
    card = rng.integers(0, cards, n)
    amount = rng.gamma(4.0, 27.0 / 4.0, n)
    seen = np.array([np.count_nonzero(card[:i] == card[i]) for i in range(n)])
    big = rng.choice(np.flatnonzero(seen >= 3), spikes, replace=False)
    amount[big] = rng.uniform(5_000, 9_999, spikes)
    events = [Event(event_id=f"e{i}", ts=float(ts[i]), card_id=f"c{card[i]}", terminal_id=f"t{card[i] % 9}",
                    amount=round(float(amount[i]), 2)) for i in range(n)]
    return events, {f"e{i}" for i in big}


def test_rare_amounts_alert_on_first_occurrence_with_their_reason_while_the_models_warm_up() -> None:
    engine = build_processor(Settings(), "transactions")  # the shipped defaults
    events, spikes = _stream()
    batch = engine.process(events)
    alerted = {events[i].event_id for i in np.flatnonzero(batch.flags)}
    assert spikes <= alerted, "every 5,000-9,999 amount on a card that usually spends ~27 alerts"
    assert len(alerted - spikes) <= 2, f"ordinary purchases stay quiet, got {sorted(alerted - spikes)}"
    first = min(i for i, e in enumerate(events) if e.event_id in spikes)
    assert batch.warming_up[first], "the first rare amount arrives while the models still warm up"
    assert "x the card's usual" in batch.reasons[first]

    later = engine.process([Event(event_id="late", ts=T0 + 11 * 86_400, card_id="c1", terminal_id="t1",
                                  amount=99_999.0)])
    assert later.flags[0] and "amount 99999.00" in later.reasons[0]


def test_profile_scores_do_not_depend_on_batching_and_survive_a_checkpoint(tmp_path: Path) -> None:
    settings = Settings()
    events, _ = _stream(n=3_000, cards=60, spikes=5)
    whole = build_processor(settings, "transactions").process(events).contender_scores[CardProfile.name]
    engine = build_processor(settings, "transactions")
    parts = [engine.process(events[i : i + 97]).contender_scores[CardProfile.name] for i in range(0, 2_500, 97)]
    checkpoint.save(tmp_path / "c.ckpt", {"engine": engine.state_dict()})
    resumed = build_processor(settings, "transactions")
    resumed.load_state_dict(checkpoint.load(tmp_path / "c.ckpt")["engine"])
    parts.append(resumed.process(events[len(np.concatenate(parts)) :]).contender_scores[CardProfile.name])
    np.testing.assert_array_equal(np.concatenate(parts), whole)  # bit for bit


def test_the_profile_can_be_turned_off() -> None:
    settings = Settings.model_validate({"transactions": {"profile_threshold": 0}})
    events, _ = _stream()
    batch = build_processor(settings, "transactions").process(events)
    assert CardProfile.name not in batch.contender_scores and not batch.reasons


def _storm(cards: int = 40) -> list[Event]:
    """Five ordinary purchases per card over five days, then every card spends 100x its usual in the same minute."""
    events = [Event(event_id=f"n{c}-{d}", ts=T0 + d * 86_400 + c * 60, card_id=f"c{c}", terminal_id=f"t{c % 5}",
                    amount=20.0 + (c + d) % 7) for d in range(5) for c in range(cards)]
    events.sort(key=lambda e: e.ts)
    storm_at = (T0 // 60) * 60 + 6 * 86_400  # the start of a minute
    events += [Event(event_id=f"s{c}", ts=storm_at + c, card_id=f"c{c}", terminal_id=f"t{c % 5}", amount=2_300.0)
               for c in range(cards)]
    return events


def test_a_storm_is_capped_by_the_alert_budget_counted_and_reported_once() -> None:
    settings = Settings.model_validate({"transactions": {"alert_budget_per_minute": 10}})
    events = _storm()
    engine = build_processor(settings, "transactions")
    batch = engine.process(events)
    storm = np.array([e.event_id.startswith("s") for e in events])
    assert batch.flags[storm].sum() == 10, "the first 10 alerts of the minute go out"
    assert batch.suppressed[storm].sum() == 30 and batch.held_back == engine.held_back == 30
    assert len(batch.over_budget) == 1 and events[batch.over_budget[0]].event_id == "s10"

    pieces = build_processor(settings, "transactions")
    flags = np.concatenate([pieces.process(events[i : i + 7]).flags for i in range(0, len(events), 7)])
    np.testing.assert_array_equal(flags, batch.flags)


def test_the_runner_sends_one_over_budget_alert_and_counts_the_rest(tmp_path: Path) -> None:
    from ingest.records import Record
    from ingest.schemas import Transaction, encode_event
    from pipeline.observability import RunnerMetrics
    from sinks.memory_sink import MemorySink
    from tests.unit.test_runner_loop import FakeSource, make_runner

    settings = Settings.model_validate({"transactions": {"alert_budget_per_minute": 10}})
    records = [Record("tx", 0, i, -1, e.card_id.encode(), encode_event(Transaction(
        event_id=e.event_id, ts=e.ts, card_id=e.card_id, terminal_id=e.terminal_id, amount=e.amount)))
        for i, e in enumerate(_storm())]
    sink, metrics = MemorySink(), RunnerMetrics()
    runner = make_runner(FakeSource(records), sink, processor=build_processor(settings, "transactions"),
                         max_records=50)
    runner.metrics = metrics
    runner.run()
    notes = [a for a in sink.alerts if a.entity == "*"]
    assert len(notes) == 1 and "more than 10 alerts" in (notes[0].reason or "")
    assert sum(a.event_id.startswith("s") for a in sink.alerts) == 10
    assert metrics.held_back.labels(domain="transactions")._value.get() == 30
