"""Redis goes away for 10 s while events stream (a private, durable redis-server: appendonly yes,
appendfsync always). The worker pauses, commits nothing past alerts it could not flush, and once
Redis is back every alert of an uninterrupted reference run is in the stream exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N = 40_000  # long enough that the worker is mid-stream when Redis stops (~4k events/s here)
OUTAGE_S = 10.0


def test_redis_down_10s_pauses_the_worker_and_loses_nothing(kafka_bootstrap: str, redis_url: str, redis_client,
                                                          redis_prefix: str, unique_name: str,
                                                          tmp_path: Path) -> None:
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: 1, labels: 1})
    h.produce(kafka_bootstrap, topic, h.encoded(h.simulated_transactions(N, seed=7)))
    private = h.PrivateRedis(tmp_path)
    private.start()
    ref_spec = h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-ref", f"{redis_prefix}ref:",
                            tmp_path)
    spec = h.WorkerSpec(kafka_bootstrap, private.url, topic, labels, f"{unique_name}-outage", "outage:", tmp_path,
                        idle_timeout_s=20)  # a paused worker counts as idle: outlive the 10 s outage
    reference, worker = h.Worker(ref_spec, "ref"), h.Worker(spec, "outage")
    try:
        with h.workers(reference, worker):
            reference.start()
            worker.start()
            h.wait_until(lambda: h.scored_count(worker.scored_log) >= N // 10 or not worker.alive, 120,
                         "the worker to score a tenth of the events")
            private.stop()
            down_at = time.monotonic()
            time.sleep(2.0)  # the batch in flight finishes; then nothing may move
            scored_paused = h.scored_count(worker.scored_log)
            assert scored_paused < N, "the worker finished the stream before Redis stopped: make the stream longer"
            committed_paused = h.committed_offsets(kafka_bootstrap, spec.group).get((topic, 0), 0)
            time.sleep(OUTAGE_S - (time.monotonic() - down_at))
            assert worker.alive, f"the worker died while Redis was down:\n{worker.log_tail()}"
            assert h.scored_count(worker.scored_log) == scored_paused, "the worker kept consuming without Redis"
            assert h.committed_offsets(kafka_bootstrap, spec.group).get((topic, 0), 0) == committed_paused, \
                "offsets were committed past alerts that could not be flushed"
            assert committed_paused < N
            private.start()
            back_at = time.monotonic()
            h.wait_until(lambda: h.scored_count(worker.scored_log) > scored_paused, 60, "the worker to resume")
            resumed_s = time.monotonic() - back_at
            assert worker.wait(150) == 0, worker.log_tail()
            assert reference.wait(150) == 0, reference.log_tail()

        assert h.committed_offsets(kafka_bootstrap, spec.group)[(topic, 0)] == N
        assert {r.offset for r in h.read_scored(worker.scored_log)} == set(range(N))
        got = h.alert_ids(private.client(), "outage:alerts")
        want = h.alert_ids(redis_client, f"{redis_prefix}ref:alerts")
        assert want, "the reference run raised no alert: nothing to compare"
        assert not h.duplicates(got), h.duplicates(got)
        assert set(got) == set(want)
        h.record_figures("redis_outage", events=N, outage_s=OUTAGE_S, alerts=len(got), lost=len(set(want) - set(got)),
                         duplicated=len(h.duplicates(got)), resumed_after_s=round(resumed_s, 1),
                         committed_while_down=committed_paused)
    finally:
        private.stop()
