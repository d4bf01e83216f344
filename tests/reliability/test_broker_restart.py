"""The Kafka broker stops and comes back mid-stream (a broker of this test only, own ports and data).

The worker reconnects by itself and continues; afterwards every event was scored, the committed
offsets reached the end, and scores and alerts are those of an uninterrupted run on the session
broker, each alert exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N = 12_000


def _restart_broker_mid_stream(kafka_bootstrap: str, redis_url: str, redis_client: Any, redis_prefix: str,
                               unique_name: str, tmp_path: Path, down_s: float, session_timeout_ms: int) -> dict:
    items = h.encoded(h.simulated_transactions(N, seed=9))
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: 1, labels: 1})
    h.produce(kafka_bootstrap, topic, items)
    reference = h.Worker(h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-ref",
                                      f"{redis_prefix}ref:", tmp_path), "ref")
    reference.start()
    with h.private_kafka(tmp_path) as broker:
        h.create_topics(broker.kafka_bootstrap, {topic: 1, labels: 1})
        h.produce(broker.kafka_bootstrap, topic, items)
        spec = h.WorkerSpec(broker.kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-restart",
                            f"{redis_prefix}restart:", tmp_path, idle_timeout_s=600,
                            extra_env={"STREAMWARDEN_KAFKA__SESSION_TIMEOUT_MS": str(session_timeout_ms)})
        worker = h.Worker(spec, "restart")
        with h.workers(reference, worker):
            worker.start()
            h.wait_until(lambda: h.scored_count(worker.scored_log) >= N // 4 or not worker.alive, 120,
                         "the worker to score a quarter of the events")
            h.stop_kafka(broker)
            stopped_at = h.scored_count(worker.scored_log)
            time.sleep(down_s)
            assert worker.alive, f"the worker died while the broker was down:\n{worker.log_tail()}"
            broker.start_kafka()
            back = time.monotonic()
            h.wait_until(lambda: h.scored_count(worker.scored_log) > stopped_at or not worker.alive, 90,
                         "the worker to score again after the broker came back")
            reconnect_s = time.monotonic() - back
            # No idle timeout here (the outage itself is idle time): stop once every offset was scored.
            h.wait_until(lambda: {r.offset for r in h.read_scored(worker.scored_log)} >= set(range(N))
                         or not worker.alive, 120, "every event to be scored", interval_s=1.0)
            assert worker.stop() == 0, worker.log_tail()
            assert reference.wait(150) == 0, reference.log_tail()
        assert h.committed_offsets(broker.kafka_bootstrap, spec.group)[(topic, 0)] == N
    scored = h.read_scored(worker.scored_log)
    assert {r.offset for r in scored} == set(range(N))
    got = h.alert_ids(redis_client, f"{redis_prefix}restart:alerts")
    want = h.alert_ids(redis_client, f"{redis_prefix}ref:alerts")
    assert want, "the reference run raised no alert: nothing to compare"
    assert not h.duplicates(got), h.duplicates(got)
    rescored = len(scored) - N
    assert h.scores_equal(h.last_scores(scored), h.last_scores(h.read_scored(reference.scored_log))), (
        f"{rescored} events were scored again after the outage, with other scores than an uninterrupted run")
    assert set(got) == set(want)
    return {"events": N, "broker_down_s": down_s, "alerts": len(got), "lost": len(set(want) - set(got)),
            "duplicated": len(h.duplicates(got)), "rescored": rescored,
            "scoring_again_after_broker_up_s": round(reconnect_s, 1)}


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(kafka_bootstrap: str, redis_url: str,
                                                               redis_client, redis_prefix: str, unique_name: str,
                                                               tmp_path: Path) -> None:
    """The group membership outlives the outage (session timeout 60 s): the worker just reconnects."""
    figures = _restart_broker_mid_stream(kafka_bootstrap, redis_url, redis_client, redis_prefix, unique_name,
                                         tmp_path, down_s=5.0, session_timeout_ms=60_000)
    h.record_figures("broker_restart", **figures)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Runner bug: when the consumer's membership expires during a broker outage (session timeout 6 s, broker "
    "down 8 s + restart), commits fail while the runner keeps processing fetched records, then kafka-python "
    "reports the partitions LOST. build_live_runner passes no on_lost callback and Runner has none, so after "
    "rejoining the records from the last committed offset are redelivered and re-processed on top of the "
    "in-memory state that already holds them (no rewind to the checkpoint): 3,500-4,000 events are scored a "
    "second time, differently from an uninterrupted run (observed 14:32 UTC: every score NaN after the replay, "
    "hence no alert at all), and alerts are missed. Fix: on_lost (and a revoke whose commit failed) must "
    "restore the last checkpoint and seek to its offsets, as restore() does at start-up."))
def test_broker_outage_longer_than_the_session_timeout_rescores_like_no_outage(
        kafka_bootstrap: str, redis_url: str, redis_client, redis_prefix: str, unique_name: str,
        tmp_path: Path) -> None:
    _restart_broker_mid_stream(kafka_bootstrap, redis_url, redis_client, redis_prefix, unique_name, tmp_path,
                               down_s=8.0, session_timeout_ms=6_000)
