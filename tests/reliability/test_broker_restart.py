"""The Kafka broker stops and comes back mid-stream (a broker of this test only, own ports and data).

The worker reconnects by itself and continues; afterwards every event was scored, the committed
offsets reached the end, and scores and alerts are those of an uninterrupted run on the session
broker, each alert exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N = 30_000  # long enough that the worker is mid-stream when the broker stops (~4k events/s here)


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
            h.wait_until(lambda: h.scored_count(worker.scored_log) >= N // 10 or not worker.alive, 120,
                         "the worker to score a tenth of the events")
            h.stop_kafka(broker)
            stopped_at = h.scored_count(worker.scored_log)
            assert stopped_at < N, "the worker finished the stream before the broker stopped: make it longer"
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


def test_broker_outage_longer_than_the_session_timeout_rescores_like_no_outage(
        kafka_bootstrap: str, redis_url: str, redis_client, redis_prefix: str, unique_name: str,
        tmp_path: Path) -> None:
    """The membership expires (session timeout 6 s, broker down 8 s): the partitions are reported lost, the
    worker drops what it processed since its last checkpoint, rejoins and replays from the checkpoint."""
    figures = _restart_broker_mid_stream(kafka_bootstrap, redis_url, redis_client, redis_prefix, unique_name,
                                         tmp_path, down_s=8.0, session_timeout_ms=6_000)
    h.record_figures("broker_outage_past_session_timeout", **figures)


def test_worker_stalled_past_the_session_timeout_rescores_like_no_stall(kafka_bootstrap: str, redis_url: str,
                                                                         redis_client, redis_prefix: str,
                                                                         unique_name: str, tmp_path: Path) -> None:
    """The same expiry, made certain: the worker is frozen (SIGSTOP) for 10 s, longer than its 6 s session
    timeout. When it thaws, its commits are refused and its partitions are reported lost; it rewinds to its
    last checkpoint and replays, so every score and alert is the uninterrupted run's."""
    items = h.encoded(h.simulated_transactions(N, seed=9))
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: 1, labels: 1})
    h.produce(kafka_bootstrap, topic, items)

    def spec(role: str) -> h.WorkerSpec:
        return h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-{role}",
                            f"{redis_prefix}{role}:", tmp_path)

    reference, stalled = h.Worker(spec("ref"), "ref"), h.Worker(spec("stall"), "stall")
    with h.workers(reference, stalled):
        reference.start()
        stalled.start()
        h.wait_until(lambda: h.scored_count(stalled.scored_log) >= N // 10 or not stalled.alive, 120,
                     "the worker to score a tenth of the events")
        assert stalled.proc is not None and stalled.alive, stalled.log_tail()
        os.killpg(stalled.proc.pid, signal.SIGSTOP)
        frozen_at = h.scored_count(stalled.scored_log)
        assert frozen_at < N, "the worker finished the stream before it was frozen: make the stream longer"
        time.sleep(10.0)
        os.killpg(stalled.proc.pid, signal.SIGCONT)
        assert stalled.wait(150) == 0, stalled.log_tail()
        assert reference.wait(150) == 0, reference.log_tail()
    log_text = stalled.log_path.read_text(errors="replace")
    assert "lost" in log_text and "rewound to the last checkpoint" in log_text, stalled.log_tail()
    assert h.committed_offsets(kafka_bootstrap, stalled.spec.group)[(topic, 0)] == N
    scored = h.read_scored(stalled.scored_log)
    assert {r.offset for r in scored} == set(range(N))
    got = h.alert_ids(redis_client, f"{redis_prefix}stall:alerts")
    want = h.alert_ids(redis_client, f"{redis_prefix}ref:alerts")
    assert want and not h.duplicates(got), h.duplicates(got)
    assert h.scores_equal(h.last_scores(scored), h.last_scores(h.read_scored(reference.scored_log)))
    assert set(got) == set(want)
    h.record_figures("worker_stalled_past_session_timeout", events=N, frozen_s=10.0, frozen_after_scored=frozen_at,
                     rescored=len(scored) - N, alerts=len(got), lost=len(set(want) - set(got)),
                     duplicated=len(h.duplicates(got)))
