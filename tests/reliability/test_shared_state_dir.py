"""Two workers of one group on one host share a state directory; one is killed -9 and restarted.

Each worker holds its own checkpoint file (a lock per file: the restarted worker takes back the one its
dead predecessor held, never the live worker's), no event is skipped and no alert is duplicated.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N, PARTITIONS, RATE = 9_000, 3, 300.0  # a 30 s stream


def _claimed(worker: h.Worker) -> list[str]:
    return re.findall(r"checkpoint file claimed: (\S+)", worker.log_path.read_text(errors="replace"))


def test_two_workers_one_state_dir_and_a_kill(kafka_bootstrap: str, redis_url: str, redis_client, redis_prefix: str,
                                              unique_name: str, tmp_path: Path) -> None:
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: PARTITIONS, labels: 1})
    items = h.encoded(h.simulated_transactions(N, seed=21))
    state_dir = tmp_path / "shared-state"
    spec = h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-group", f"{redis_prefix}g:",
                        tmp_path, idle_timeout_s=10, checkpoint_interval_s=2.0,
                        extra_env={"STREAMWARDEN_RUNNER__STATE_DIR": str(state_dir)})
    first, second = h.Worker(spec, "w0"), h.Worker(spec, "w1")

    def scored() -> int:
        return h.scored_count(first.scored_log) + h.scored_count(second.scored_log)

    restarted = threading.Event()  # the stream's last third trickles until the restarted worker scores
    producer = threading.Thread(target=h.produce_paced, args=(kafka_bootstrap, topic, items, RATE), daemon=True,
                                kwargs={"trickle_after": 2 * N // 3, "until": restarted})
    with h.workers(first, second):
        producer.start()
        first.start()
        h.wait_until(lambda: scored() >= N // 10, 240, "a tenth of the events")
        second.start()
        h.wait_until(lambda: h.scored_count(second.scored_log) > 0, 240, "the second worker to take partitions")
        h.wait_until(lambda: len(list(state_dir.glob("*.ckpt"))) == 2, 60, "both workers to checkpoint")
        second.kill9()
        killed_at = scored()
        second.start()
        h.wait_until(lambda: scored() > killed_at + 100, 240, "scoring to go on after the restart")
        restarted.set()
        producer.join(240)
        assert not producer.is_alive()
        for w in (first, second):
            assert w.wait(150) == 0, w.log_tail()

    files = sorted(p.name for p in state_dir.glob("*.ckpt"))
    assert files == [f"{spec.group}-transactions-worker2.ckpt", f"{spec.group}-transactions.ckpt"], files
    first_claims, second_claims = _claimed(first), _claimed(second)
    assert len(set(first_claims)) == 1 and len(second_claims) == 2 and len(set(second_claims)) == 1
    assert first_claims[0] != second_claims[0]  # the restarted worker took back its own file

    rows = [r for w in (first, second) for r in h.read_scored(w.scored_log)]
    ends = h.end_offsets(kafka_bootstrap, topic)
    expected = {(p, o) for (_, p), end in ends.items() for o in range(end)}
    lost = expected - {(r.partition, r.offset) for r in rows}
    assert sum(ends.values()) == N and not lost, f"{len(lost)} events never scored"
    assert h.committed_offsets(kafka_bootstrap, spec.group) == ends
    alerts = h.alert_ids(redis_client, f"{spec.redis_prefix}alerts")
    assert alerts, "no alert raised: nothing to check for duplicates"
    assert not h.duplicates(alerts), h.duplicates(alerts)
    h.record_figures("shared_state_dir", events=N, partitions=PARTITIONS, killed_at=killed_at, lost=len(lost),
                     alerts=len(alerts), duplicated=len(h.duplicates(alerts)), scored_lines=len(rows))
