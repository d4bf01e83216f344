"""Soak: 20,000 messages mixing valid events with random bytes of 0 to 2 MB, deep JSON, NaN and every reject code.

Properties checked on a random mix (seed printed; SW_CHAOS_SEED replays one): every valid event is scored
exactly once, every other message has exactly one dead letter (oversized exactly when it is over the size
limit), the committed offset reaches the end offset, and the worker never needs a restart.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from ingest.consumer import create_topics
from ingest.decode import RejectReason
from tests.reliability import harness as h
from tests.reliability.test_poison_input import _poison

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

TOTAL, VALID, RANDOM_BYTES = 20_000, 12_000, 1_000
MAX_SIZE = 2 * 1024 * 1024
SIZE_LIMIT = 64 * 1024  # the shipped ingest limit (oversized above it)


def _random_bytes(rng: random.Random, i: int) -> bytes:
    """0 bytes, exactly 2 MB, or a log-uniform size in between."""
    size = 0 if i == 0 else MAX_SIZE if i == 1 else int(2 ** rng.uniform(0, 21))
    return rng.randbytes(min(size, MAX_SIZE))


def test_soak_of_valid_and_hostile_messages_needs_no_restart(kafka_bootstrap: str, redis_url: str, redis_client,
                                                             redis_prefix: str, unique_name: str,
                                                             tmp_path: Path) -> None:
    seed = int(os.environ.get("SW_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    events = h.encoded(h.simulated_transactions(VALID, seed=seed % 1000))
    kinds = ["valid"] * VALID + ["bytes"] * RANDOM_BYTES + ["poison"] * (TOTAL - VALID - RANDOM_BYTES)
    rng.shuffle(kinds)
    items: list[tuple[bytes | None, bytes]] = []
    expected: dict[int, str | None] = {}  # offset -> reject reason (None: not known in advance)
    valid_ids: list[str] = []
    next_valid = n_bytes = 0
    for offset, kind in enumerate(kinds):
        key = events[next_valid % VALID][0]
        if kind == "valid":
            key, value = events[next_valid]
            valid_ids.append(msgspec.json.decode(value)["event_id"])
            next_valid += 1
        elif kind == "bytes":
            value = _random_bytes(rng, n_bytes)
            n_bytes += 1
            expected[offset] = "empty" if not value else "oversized" if len(value) > SIZE_LIMIT else None
        else:
            value, reason = _poison(rng, msgspec.json.decode(events[rng.randrange(VALID)][1]))
            expected[offset] = reason
        items.append((key, value))

    topic, labels = f"{unique_name}-soak", f"{unique_name}-labels"
    create_topics(kafka_bootstrap, {topic: 1, labels: 1}, topic_configs={"max.message.bytes": str(3 * MAX_SIZE)})
    h.produce(kafka_bootstrap, topic, items)
    spec = h.WorkerSpec(kafka_bootstrap, redis_url, topic, labels, f"{unique_name}-soak", f"{redis_prefix}soak:",
                        tmp_path, idle_timeout_s=6)
    worker = h.Worker(spec, "soak")
    with h.workers(worker):
        worker.start()
        assert worker.wait(600) == 0, worker.log_tail()
    assert worker.starts == 1

    scored = Counter(r.event_id for r in h.read_scored(worker.scored_log))
    assert set(scored) == set(valid_ids), f"seed {seed}: {len(set(valid_ids) - set(scored))} valid events unscored"
    assert all(n == 1 for n in scored.values()), f"seed {seed}: events scored twice: {scored.most_common(3)}"
    assert h.committed_offsets(kafka_bootstrap, spec.group)[(topic, 0)] == h.end_offsets(kafka_bootstrap, topic)[
        (topic, 0)] == TOTAL

    letters = h.dead_letters(kafka_bootstrap, topic)
    by_offset = Counter(d["offset"] for d in letters)
    assert set(by_offset) == set(expected) and max(by_offset.values()) == 1, f"seed {seed}: DLQ != rejects"
    reasons = {d["offset"]: d["reason"] for d in letters}
    wrong = {o: (reasons[o], want) for o, want in expected.items() if want is not None and reasons[o] != want}
    assert not wrong, f"seed {seed}: {list(wrong.items())[:5]}"
    assert {reasons[o] for o in expected} <= {r.value for r in RejectReason}
    assert {r.value for r in RejectReason} <= set(reasons.values()), "a reject code never exercised"
    sizes = [len(items[o][1]) for o in expected if len(items[o][1]) > SIZE_LIMIT]
    h.record_figures("soak", seed=seed, messages=TOTAL, valid=VALID, rejects=len(letters),
                     reasons=dict(Counter(reasons.values())), largest_bytes=max(sizes), over_limit=len(sizes),
                     scored_twice=0, lost=VALID - len(scored), worker_starts=worker.starts)
