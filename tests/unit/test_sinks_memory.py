"""MemorySink and the shared suppression rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.alert import Alert
from sinks.memory_sink import MemorySink
from sinks.suppression import Mark, SuppressionConfig, SuppressionState, should_emit


def alert(event_id: str, entity: str, score: float, ts: float, domain: str = "transactions") -> Alert:
    return Alert(f"id-{event_id}", event_id, entity, domain, score, 0.5, "v1", ts, ts + 1.0)


def test_duplicates_are_delivered_once_across_flushes() -> None:
    sink = MemorySink()
    batch = [alert(str(i), f"c{i}", 1.0, float(i)) for i in range(5)]
    sink.add(batch)
    assert sink.flush() == 5
    sink.add(batch + batch[:2])
    assert sink.flush() == 0
    assert [a.event_id for a in sink.alerts] == ["0", "1", "2", "3", "4"]
    assert sink.stats["written"] == 5 and sink.stats["duplicates"] == 7 and sink.stats["pending"] == 0


def test_add_buffers_until_flush() -> None:
    sink = MemorySink()
    sink.add([alert("1", "c", 1.0, 0.0)])
    assert sink.pending == 1 and sink.alerts == []
    sink.flush()
    assert sink.pending == 0 and len(sink.alerts) == 1


def test_suppression_is_per_entity_in_event_time_and_counted() -> None:
    sink = MemorySink(suppression_s=60.0, suppression_factor=2.0)
    sink.add(
        [
            alert("a1", "card-A", 1.0, 0.0),  # first: out
            alert("a2", "card-A", 1.5, 30.0),  # inside window, not 2x: suppressed
            alert("b1", "card-B", 1.0, 31.0),  # other entity: out
            alert("a3", "card-A", 2.0, 40.0),  # 2x the last alerted score: out, new mark
            alert("a4", "card-A", 3.0, 90.0),  # 50 s after the mark, 1.5x: suppressed
            alert("a5", "card-A", 1.0, 100.0),  # 60 s after the mark: out
            alert("s1", "card-A", 1.0, 100.0, domain="sensors"),  # same name, other domain: out
        ]
    )
    sink.flush()
    assert [a.event_id for a in sink.alerts] == ["a1", "b1", "a3", "a5", "s1"]
    assert sink.stats["suppressed"] == 2 and sink.stats["written"] == 5


def test_suppressed_alert_redelivered_stays_decided() -> None:
    sink = MemorySink(suppression_s=60.0)
    first, quiet, later = alert("1", "c", 1.0, 0.0), alert("2", "c", 1.0, 10.0), alert("3", "c", 1.0, 200.0)
    sink.add([first, quiet, later])
    sink.flush()
    sink.add([quiet])  # replayed after `later` moved the mark: still not an alert
    sink.flush()
    assert [a.event_id for a in sink.alerts] == ["1", "3"]
    assert sink.stats["duplicates"] == 1


def test_suppression_off_by_default() -> None:
    sink = MemorySink()
    sink.add([alert(str(i), "same-card", 1.0, float(i)) for i in range(10)])
    assert sink.flush() == 10


def test_replay_gives_the_same_alerts() -> None:
    events = [alert(str(i), f"c{i % 3}", 1.0 + (i % 5), float(i * 7)) for i in range(60)]
    runs = []
    for _ in range(2):
        sink = MemorySink(suppression_s=30.0)
        for start in range(0, len(events), 8):
            sink.add(events[start : start + 8])
            sink.flush()
        runs.append([a.alert_id for a in sink.alerts])
    assert runs[0] == runs[1] and 0 < len(runs[0]) < len(events)


@pytest.mark.parametrize("kwargs", [{"window_s": -1.0}, {"score_factor": 0.5}, {"window_s": float("nan")}])
def test_bad_suppression_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SuppressionConfig(**kwargs)


def test_window_edges_and_out_of_order_events() -> None:
    cfg = SuppressionConfig(window_s=10.0, score_factor=1.5)
    last = Mark(score=2.0, event_ts=100.0)
    assert not should_emit(last, 2.0, 109.999, cfg)
    assert should_emit(last, 2.0, 110.0, cfg)
    assert not should_emit(last, 2.0, 95.0, cfg)  # late event inside the window
    assert should_emit(last, 2.0, 90.0, cfg)  # late event outside it
    assert should_emit(last, 3.0, 101.0, cfg)
    assert not should_emit(
        Mark(-1.0, 0.0), -1.0, 1.0, cfg
    )  # a non-positive mark needs a strictly higher score
    assert should_emit(Mark(-1.0, 0.0), -0.5, 1.0, cfg)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0.1, 10.0), st.floats(0.0, 500.0)), max_size=40))
def test_state_emits_at_most_once_per_window_without_escalation(seq: list[tuple[str, float, float]]) -> None:
    state = SuppressionState(SuppressionConfig(window_s=60.0, score_factor=1e9))
    emitted: dict[str, list[float]] = {}
    for entity, score, ts in sorted(seq, key=lambda x: x[2]):
        if state.decide("d", entity, score, ts):
            emitted.setdefault(entity, []).append(ts)
    for times in emitted.values():
        assert all(b - a >= 60.0 for a, b in zip(times, times[1:], strict=False))
