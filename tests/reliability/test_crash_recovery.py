"""kill -9 the live worker at random points while events stream; restart it each time.

Afterwards every event was scored, the committed offsets reached the end of the topic, and the
alerts in Redis are exactly those of an uninterrupted reference run, each once. 50,000 events
(about 45 s on the shared 2-core test machine).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N = 50_000
KILLS = 3


def test_kill9_three_times_loses_and_duplicates_nothing(kafka_bootstrap: str, redis_url: str, redis_client,
                                                       redis_prefix: str, unique_name: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("SW_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: 1, labels: 1})
    h.produce(kafka_bootstrap, topic, h.encoded(h.simulated_transactions(N, seed=3)))

    def spec(role: str) -> h.WorkerSpec:
        return h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-{role}",
                            f"{redis_prefix}{role}:", tmp_path)

    reference, chaos = h.Worker(spec("ref"), "ref"), h.Worker(spec("chaos"), "chaos")
    kill_at = sorted(rng.sample(range(N // 10, 9 * N // 10), KILLS))
    recoveries: list[float] = []
    with h.workers(reference, chaos):
        reference.start()
        chaos.start()
        for target in kill_at:
            h.wait_until(lambda t=target: h.scored_count(chaos.scored_log) >= t or not chaos.alive, 120,
                         f"the worker to score {target} events")
            assert chaos.alive, f"worker exited before the kill at {target} (seed {seed}):\n{chaos.log_tail()}"
            chaos.kill9()
            before = h.scored_count(chaos.scored_log)
            restarted = time.monotonic()
            chaos.start()
            h.wait_until(lambda b=before: h.scored_count(chaos.scored_log) > b or not chaos.alive, 120,
                         "the restarted worker to score again")
            recoveries.append(time.monotonic() - restarted)
        assert chaos.wait(150) == 0, chaos.log_tail()
        assert reference.wait(150) == 0, reference.log_tail()

    scored = h.read_scored(chaos.scored_log)
    missing = set(range(N)) - {r.offset for r in scored}
    assert not missing, f"{len(missing)} events never scored (seed {seed}), e.g. {sorted(missing)[:5]}"
    ends = h.end_offsets(kafka_bootstrap, topic)
    assert h.committed_offsets(kafka_bootstrap, chaos.spec.group).get((topic, 0)) == ends[(topic, 0)] == N

    ref_alerts = h.alert_ids(redis_client, f"{reference.spec.redis_prefix}alerts")
    chaos_alerts = h.alert_ids(redis_client, f"{chaos.spec.redis_prefix}alerts")
    assert ref_alerts, "the reference run raised no alert: nothing to compare"
    assert not h.duplicates(chaos_alerts), f"duplicated alerts (seed {seed}): {h.duplicates(chaos_alerts)}"
    assert set(chaos_alerts) == set(ref_alerts), (
        f"seed {seed}: missing {sorted(set(ref_alerts) - set(chaos_alerts))[:5]}, "
        f"extra {sorted(set(chaos_alerts) - set(ref_alerts))[:5]}")
    # Restore + replay is deterministic: the last score of every event is the reference's.
    assert h.scores_equal(h.last_scores(scored), h.last_scores(h.read_scored(reference.scored_log)))
    h.record_figures("crash", events=N, kills=KILLS, kill_at=kill_at, seed=seed, scored_lines=len(scored),
                     rescored=len(scored) - N, alerts=len(chaos_alerts), lost=len(missing),
                     duplicated=len(h.duplicates(chaos_alerts)), max_recovery_s=round(max(recoveries), 1))
