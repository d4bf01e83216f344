"""RedisAlertSink and AlertSubscriber against a real Redis."""

from __future__ import annotations

import io
import json
import random
import threading
import time

import pytest
from rich.console import Console

from sinks.alert import Alert, make_alert_id
from sinks.errors import SinkError
from sinks.memory_sink import MemorySink
from sinks.redis_sink import RedisAlertSink
from sinks.subscriber import AlertSubscriber
from sinks.tail import tail_alerts

pytestmark = pytest.mark.redis


def alert(
    n: int,
    entity: str | None = None,
    score: float = 1.0,
    ts: float | None = None,
    domain: str = "transactions",
) -> Alert:
    event_id = f"evt-{n}"
    return Alert(
        make_alert_id(event_id, "ae", "v1"),
        event_id,
        entity or f"card-{n}",
        domain,
        score,
        0.5,
        "v1",
        float(n) if ts is None else ts,
        1_700_000_000.0 + n,
        [("amount", float(n)), ("hour", 1.0)],
    )


def stream_alerts(client, prefix: str) -> list[Alert]:  # type: ignore[no-untyped-def]
    return [Alert.from_json(fields[b"alert"]) for _, fields in client.xrange(f"{prefix}alerts")]


@pytest.fixture
def sink(redis_url: str, redis_prefix: str):  # type: ignore[no-untyped-def]
    with RedisAlertSink(redis_url, prefix=redis_prefix) as s:
        yield s


@pytest.fixture
def subscriber(redis_url: str, redis_prefix: str):  # type: ignore[no-untyped-def]
    with AlertSubscriber(redis_url, prefix=redis_prefix) as s:
        yield s


def test_same_batch_twice_is_in_the_stream_exactly_once(
    sink: RedisAlertSink, redis_client, redis_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    batch = [alert(i, domain="sensors" if i % 3 == 0 else "transactions") for i in range(50)]
    sink.add(batch)
    assert sink.flush() == 50
    sink.add(batch)
    sink.add(batch[:10])
    assert sink.flush() == 0
    stored = stream_alerts(redis_client, redis_prefix)
    assert [a.alert_id for a in stored] == [a.alert_id for a in batch]
    assert stored == batch
    assert sink.stats["written"] == 50 and sink.stats["duplicates"] == 60 and sink.stats["pending"] == 0


def test_a_new_sink_instance_also_skips_what_was_written(
    redis_url: str, redis_prefix: str, redis_client
) -> None:  # type: ignore[no-untyped-def]
    batch = [alert(i) for i in range(20)]
    with RedisAlertSink(redis_url, prefix=redis_prefix) as first:
        first.add(batch[:12])
        first.flush()
    with RedisAlertSink(
        redis_url, prefix=redis_prefix, batch_size=7
    ) as second:  # after a crash: replays everything
        second.add(batch)
        assert second.flush() == 8
        assert second.stats["duplicates"] == 12
    assert [a.event_id for a in stream_alerts(redis_client, redis_prefix)] == [a.event_id for a in batch]


def test_subscriber_started_after_the_writes_gets_everything_via_its_group(
    sink: RedisAlertSink, subscriber: AlertSubscriber
) -> None:
    batch = [alert(i) for i in range(30)]
    sink.add(batch)
    sink.flush()
    got = [item.alert for item in subscriber.consume("analysts", "c1", follow=False, count=7)]
    assert got == batch
    assert subscriber.pending_count("analysts") == 0
    # a second group reads the same history independently
    assert len(list(subscriber.consume("auditors", "c1", follow=False))) == 30


def test_group_and_stream_reads_filter_by_domain(sink: RedisAlertSink, subscriber: AlertSubscriber) -> None:
    batch = [alert(i, domain="sensors" if i % 2 else "transactions") for i in range(20)]
    sink.add(batch)
    sink.flush()
    sensors = [
        item.alert.event_id
        for item in subscriber.consume("sensor-team", "c1", domain="sensors", follow=False)
    ]
    assert sensors == [a.event_id for a in batch if a.domain == "sensors"]
    assert subscriber.pending_count("sensor-team") == 0  # other domains are acked, not left pending
    plain = [
        item.alert.event_id for item in subscriber.iter_stream(since="0", domain="transactions", follow=False)
    ]
    assert plain == [a.event_id for a in batch if a.domain == "transactions"]


def test_live_subscribers_see_alerts_after_flush(sink: RedisAlertSink, subscriber: AlertSubscriber) -> None:
    with subscriber.subscribe("transactions") as tx, subscriber.subscribe() as everything:
        batch = [alert(i, domain="sensors" if i % 4 == 0 else "transactions") for i in range(12)]
        sink.add(batch)
        sink.flush()
        tx_seen = [tx.get(timeout=5.0) for _ in range(9)]
        all_seen = [everything.get(timeout=5.0) for _ in range(12)]
        assert tx.get(timeout=0.2) is None  # nothing from the other domain
    assert tx_seen == [a for a in batch if a.domain == "transactions"]
    assert all_seen == batch


def test_duplicates_are_not_published_twice(sink: RedisAlertSink, subscriber: AlertSubscriber) -> None:
    batch = [alert(i) for i in range(5)]
    sink.add(batch)
    sink.flush()
    with subscriber.subscribe("transactions") as live:
        sink.add(batch)
        sink.flush()
        assert live.get(timeout=0.5) is None


def test_suppression_per_entity_is_visible_in_counters_and_stream(
    redis_url: str, redis_prefix: str, redis_client
) -> None:  # type: ignore[no-untyped-def]
    sequence = [
        alert(1, "card-A", 1.0, 0.0),  # out
        alert(2, "card-A", 1.2, 20.0),  # suppressed
        alert(3, "card-B", 1.0, 21.0),  # other entity: out
        alert(4, "card-A", 2.0, 30.0),  # 2x: out
        alert(5, "card-A", 2.5, 80.0),  # within 60 s of the new mark: suppressed
        alert(6, "card-A", 1.0, 95.0),  # 65 s after the mark: out
    ]
    with RedisAlertSink(redis_url, prefix=redis_prefix, suppression_s=60.0, suppression_factor=2.0) as s:
        s.add(sequence)
        assert s.flush() == 4
        assert (s.stats["written"], s.stats["suppressed"]) == (4, 2)
        s.add(sequence)  # redelivery: every alert already decided
        s.flush()
        assert s.stats["duplicates"] == 6 and s.stats["written"] == 4
    assert [a.event_id for a in stream_alerts(redis_client, redis_prefix)] == [
        "evt-1",
        "evt-3",
        "evt-4",
        "evt-6",
    ]


def test_suppression_state_survives_a_sink_restart(redis_url: str, redis_prefix: str) -> None:
    with RedisAlertSink(redis_url, prefix=redis_prefix, suppression_s=60.0) as before:
        before.add([alert(1, "card-A", 1.0, 100.0)])
        before.flush()
    with RedisAlertSink(redis_url, prefix=redis_prefix, suppression_s=60.0) as after:
        after.add([alert(2, "card-A", 1.0, 130.0), alert(3, "card-A", 1.0, 161.0)])
        assert after.flush() == 1
        assert after.stats["suppressed"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lua_script_and_memory_sink_decide_alike(
    redis_url: str, redis_prefix: str, redis_client, seed: int
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    events = []
    ts = 0.0
    for n in range(300):
        ts += rng.choice([0.0, 0.1, 1.0, 7.5, 30.0, 61.0])
        if rng.random() < 0.05:
            ts -= rng.uniform(0, 90)  # late events
        score = rng.choice([0.6, 0.9, 1.0, 1.35, 1.5, 2.0, 3.1, rng.uniform(0.5, 5.0)])
        events.append(alert(n, f"e{rng.randrange(6)}", score, ts, rng.choice(["transactions", "sensors"])))
    redeliveries = [events[i] for i in rng.sample(range(300), 60)]
    memory = MemorySink(suppression_s=45.0, suppression_factor=1.5)
    with RedisAlertSink(
        redis_url, prefix=redis_prefix, suppression_s=45.0, suppression_factor=1.5, batch_size=17
    ) as redis_sink:
        stream = events + redeliveries
        i = 0
        while i < len(stream):
            step = rng.randrange(1, 40)
            for s in (memory, redis_sink):
                s.add(stream[i : i + step])
                s.flush()
            i += step
        keys = ("written", "duplicates", "suppressed")
        assert {k: redis_sink.stats[k] for k in keys} == {k: memory.stats[k] for k in keys}
    assert 0 < memory.stats["suppressed"] and 0 < memory.stats["written"]
    assert [a.alert_id for a in stream_alerts(redis_client, redis_prefix)] == [
        a.alert_id for a in memory.alerts
    ]


def test_dead_consumers_pending_alerts_are_claimed_by_another(
    sink: RedisAlertSink, redis_url: str, redis_prefix: str
) -> None:
    sink.add(alert(i) for i in range(10))
    sink.flush()
    with (
        AlertSubscriber(redis_url, prefix=redis_prefix) as dead,
        AlertSubscriber(redis_url, prefix=redis_prefix) as alive,
    ):
        dead.ensure_group("g")
        taken = dead.read_group("g", "dead-1", count=4)  # read, never acked: this consumer "crashes"
        assert len(taken) == 4 and alive.pending_count("g") == 4
        assert alive.claim_idle("g", "alive-1", min_idle_ms=60_000) == []  # not idle long enough yet
        time.sleep(0.3)
        claimed = alive.claim_idle("g", "alive-1", min_idle_ms=200)
        assert [c.id for c in claimed] == [t.id for t in taken]
        alive.ack("g", *(c.id for c in claimed))
        rest = list(alive.consume("g", "alive-1", follow=False, min_idle_ms=200))
        assert [r.alert.event_id for r in rest] == [f"evt-{i}" for i in range(4, 10)]
        assert alive.pending_count("g") == 0


def test_consume_claims_dead_consumers_entries_itself(
    sink: RedisAlertSink, redis_url: str, redis_prefix: str
) -> None:
    sink.add(alert(i) for i in range(6))
    sink.flush()
    with (
        AlertSubscriber(redis_url, prefix=redis_prefix) as dead,
        AlertSubscriber(redis_url, prefix=redis_prefix) as alive,
    ):
        dead.ensure_group("g")
        dead.read_group("g", "dead-1", count=6)
        time.sleep(0.2)
        got = [item.alert.event_id for item in alive.consume("g", "alive-1", follow=False, min_idle_ms=100)]
        assert sorted(got) == sorted(f"evt-{i}" for i in range(6))
        assert alive.pending_count("g") == 0


def test_restarted_consumer_first_gets_its_own_unacked_alerts(
    sink: RedisAlertSink, redis_url: str, redis_prefix: str
) -> None:
    sink.add(alert(i) for i in range(5))
    sink.flush()
    with AlertSubscriber(redis_url, prefix=redis_prefix) as before:
        before.ensure_group("g")
        first = before.read_group("g", "worker-1", count=3)
    with AlertSubscriber(redis_url, prefix=redis_prefix) as after:
        again = after.read_group("g", "worker-1", count=10)
        assert [a.id for a in again] == [a.id for a in first]
        after.ack("g", *(a.id for a in again))
        assert [a.alert.event_id for a in after.read_group("g", "worker-1", count=10)] == ["evt-3", "evt-4"]


def test_stream_is_capped_approximately(redis_url: str, redis_prefix: str, redis_client) -> None:  # type: ignore[no-untyped-def]
    with RedisAlertSink(redis_url, prefix=redis_prefix, maxlen=100) as s:
        s.add(alert(i) for i in range(1000))
        s.flush()
    assert 100 <= redis_client.xlen(f"{redis_prefix}alerts") < 1000


def test_non_outage_redis_error_is_fatal_and_keeps_the_buffer(
    redis_url: str, redis_prefix: str, redis_client
) -> None:  # type: ignore[no-untyped-def]
    redis_client.set(f"{redis_prefix}alerts", "not a stream")
    with RedisAlertSink(redis_url, prefix=redis_prefix) as s:
        s.add([alert(1)])
        with pytest.raises(SinkError) as info:
            s.flush()
        assert not info.value.retriable and s.pending == 1


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None)


def test_tail_json_prints_one_object_per_line_with_domain_filter(
    sink: RedisAlertSink, redis_url: str, redis_prefix: str
) -> None:
    batch = [alert(i, domain="sensors" if i % 2 else "transactions") for i in range(8)]
    sink.add(batch)
    sink.flush()
    console = _console()
    n = tail_alerts(
        redis_url, domain="sensors", as_json=True, follow=False, console=console, prefix=redis_prefix
    )
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert n == 4 and [Alert.from_json(line) for line in lines] == [a for a in batch if a.domain == "sensors"]
    assert all(json.loads(line)["domain"] == "sensors" for line in lines)


def test_tail_table_and_group_mode(sink: RedisAlertSink, redis_url: str, redis_prefix: str) -> None:
    sink.add(alert(i, entity=f"card-{i}") for i in range(5))
    sink.flush()
    console = _console()
    assert (
        tail_alerts(redis_url, follow=False, console=console, prefix=redis_prefix, group="ops", consumer="t1")
        == 5
    )
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(f"card-{i}" in out for i in range(5)) and "0.5" in out
    again = _console()
    assert (
        tail_alerts(redis_url, follow=False, console=again, prefix=redis_prefix, group="ops", consumer="t2")
        == 0
    )
    assert "card-0" not in again.file.getvalue()  # type: ignore[attr-defined]


def test_tail_follow_prints_new_alerts_as_lines(
    sink: RedisAlertSink, redis_url: str, redis_prefix: str
) -> None:
    sink.add([alert(0, entity="old-card")])
    sink.flush()
    console = _console()
    result: list[int] = []
    reader = threading.Thread(
        target=lambda: result.append(
            tail_alerts(redis_url, follow=True, limit=3, console=console, prefix=redis_prefix, block_ms=100)
        )
    )
    reader.start()
    n = 0
    while reader.is_alive() and n < 100:  # keep writing until the follower has printed 3 (it starts at "now")
        n += 1
        sink.add([alert(n, entity=f"new-card-{n}")])
        sink.flush()
        reader.join(timeout=0.2)
    assert not reader.is_alive() and result == [3]
    lines = console.file.getvalue().strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 3 and all("new-card-" in line and "transactions" in line for line in lines)
    assert "old-card" not in "".join(lines)


def test_since_a_time_reads_only_alerts_written_from_then_on(
    sink: RedisAlertSink, subscriber: AlertSubscriber
) -> None:
    sink.add(alert(i) for i in range(3))
    sink.flush()
    time.sleep(0.02)
    cut = time.time()
    time.sleep(0.02)
    sink.add(alert(i) for i in range(3, 6))
    sink.flush()
    later = [item.alert.event_id for item in subscriber.iter_stream(since=cut, follow=False)]
    assert later == ["evt-3", "evt-4", "evt-5"]
    grouped = [item.alert.event_id for item in subscriber.consume("late", "c1", since=cut, follow=False)]
    assert grouped == later
    assert all(item.written_ts >= cut - 0.001 for item in subscriber.read(since=cut))


def test_manual_ack_leaves_unhandled_alerts_pending(
    sink: RedisAlertSink, subscriber: AlertSubscriber
) -> None:
    sink.add(alert(i) for i in range(4))
    sink.flush()
    items = list(subscriber.consume("manual", "c1", auto_ack=False, follow=False))
    assert len(items) == 4 and subscriber.pending_count("manual") == 4
    assert subscriber.ack("manual", items[0].id, items[1].id) == 2
    assert subscriber.pending_count("manual") == 2
    # the same consumer, in a new session, gets its two unhandled alerts again first
    again = list(subscriber.consume("manual", "c1", auto_ack=True, follow=False))
    assert [a.id for a in again] == [items[2].id, items[3].id]
    assert subscriber.pending_count("manual") == 0
