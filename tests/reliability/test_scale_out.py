"""Scale-out on a 6-partition topic: one worker, then two, then three; one of them is killed -9.

No event is skipped, no alert is duplicated, and, with each partition's card state moving with the
partition (the runner's own handover through a shared directory, setting `state.store`), the card
features after every handover equal those of a single-worker run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

N, PARTITIONS, RATE = 9_000, 6, 200.0  # a 45 s stream; its last third trickles until the scale-out is done


def _card_columns() -> list[int]:
    from stream_models.transaction_features import TransactionFeatures

    names = TransactionFeatures().feature_names
    return [i for i, n in enumerate(names) if n.startswith(("CUSTOMER_ID_", "CARD_", "TX_"))]


def test_two_then_three_workers_and_a_kill(kafka_bootstrap: str, redis_url: str, redis_client, redis_prefix: str,
                                           unique_name: str, tmp_path: Path) -> None:
    topic, labels = f"{unique_name}-tx", f"{unique_name}-labels"
    h.create_topics(kafka_bootstrap, {topic: PARTITIONS, labels: 1})
    items = h.encoded(h.simulated_transactions(N, seed=13))
    def spec(role: str, **kw: object) -> h.WorkerSpec:
        return h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-{role}",
                            f"{redis_prefix}{role}:", tmp_path, idle_timeout_s=10, **kw)

    group = spec("group", partition_state=str(tmp_path / "partition-state"))
    single = h.Worker(spec("single"), "single")
    pool = [h.Worker(group, f"w{i}") for i in range(3)]

    def scored() -> int:
        return sum(h.scored_count(w.scored_log) for w in pool)

    scaled_out = threading.Event()
    producer = threading.Thread(target=h.produce_paced, args=(kafka_bootstrap, topic, items, RATE), daemon=True,
                                kwargs={"trickle_after": 2 * N // 3, "until": scaled_out})
    with h.workers(single, *pool):
        producer.start()
        single.start()
        pool[0].start()
        h.wait_until(lambda: scored() >= N // 8, 240, "an eighth of the events")
        pool[1].start()
        h.wait_until(lambda: h.scored_count(pool[1].scored_log) > 0, 240, "worker 2 to take partitions")
        pool[2].start()
        h.wait_until(lambda: h.scored_count(pool[2].scored_log) > 0, 240, "worker 3 to take partitions")
        pool[1].kill9()
        killed_at = scored()
        scaled_out.set()
        assert killed_at < N, "the stream ended before the kill: nothing was handed over mid-stream"
        producer.join(240)
        assert not producer.is_alive()
        for w in (pool[0], pool[2], single):
            assert w.wait(150) == 0, w.log_tail()

    saved = sorted(p.name for p in (tmp_path / "partition-state").rglob("*.state"))
    assert saved == [f"{p}.state" for p in range(PARTITIONS)], saved
    rows = [r for w in pool for r in h.read_scored(w.scored_log)]
    seen = {(r.partition, r.offset) for r in rows}
    ends = h.end_offsets(kafka_bootstrap, topic)
    expected = {(p, o) for (_, p), end in ends.items() for o in range(end)}
    assert sum(ends.values()) == N
    assert not expected - seen, f"{len(expected - seen)} events skipped"
    assert h.committed_offsets(kafka_bootstrap, group.group) == {tp: end for tp, end in ends.items()}

    alerts = h.alert_ids(redis_client, f"{group.redis_prefix}alerts")
    assert not h.duplicates(alerts), h.duplicates(alerts)

    cols = _card_columns()
    single_features = h.read_features(single.features_log)
    pooled: dict[str, np.ndarray] = {}
    for w in pool:
        pooled.update(h.read_features(w.features_log))
    assert len(single_features) == len(pooled) == N
    differ = [e for e in single_features if not np.allclose(single_features[e][cols], pooled[e][cols],
                                                            rtol=1e-5, atol=1e-6)]
    assert not differ, f"{len(differ)} events got other card features than in a single-worker run, e.g. {differ[:3]}"
    h.record_figures("scale_out", events=N, partitions=PARTITIONS, workers="1->2->3, one killed -9",
                     killed_after_scored=killed_at, scored_lines=len(rows), rescored=len(rows) - N, skipped=0,
                     alerts=len(alerts), duplicated=0, card_feature_mismatches=len(differ))
