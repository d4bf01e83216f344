"""Per-entity history: LRU bound, growth that never overwrites a live event, handover; Kafka's partitioner."""

from __future__ import annotations

import numpy as np
import pytest

from stream_models import checkpoint
from stream_models.entity_store import EntityHistory, EntitySlots, murmur2_py, partition_of

FIELDS = {"ts": (np.dtype(np.float64), -np.inf), "amount": (np.dtype(np.float64), 0.0)}


def _append(h: EntityHistory, keys: list[str], ts: float, amount: float, keep_after: float = -np.inf) -> np.ndarray:
    slots = h.slots(keys)
    h.append(slots, {"ts": np.full(len(keys), ts), "amount": np.full(len(keys), amount)}, keep_after=keep_after)
    return slots


def test_the_least_recently_seen_entity_is_evicted_and_comes_back_empty():
    h = EntityHistory(FIELDS, max_entities=2, capacity=4)
    _append(h, ["a"], 1.0, 10.0)
    _append(h, ["b"], 2.0, 20.0)
    _append(h, ["a"], 3.0, 11.0)
    _append(h, ["c"], 4.0, 30.0)  # evicts b, seen least recently
    assert sorted(k for k in h.keys if k) == ["a", "c"]
    slot = h.slots(["b"])
    assert h.gather(slot)["amount"].tolist() == [[0.0] * h.capacity]


def test_capacity_grows_instead_of_overwriting_an_event_inside_the_look_back():
    h = EntityHistory(FIELDS, max_entities=4, capacity=2)
    for t in range(5):
        _append(h, ["a"], float(t), float(t), keep_after=-1.0)  # every event is still needed
    assert h.capacity >= 5
    ts = h.gather(h.slots(["a"]))["ts"][0]
    assert sorted(ts[np.isfinite(ts)].tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_entities_move_between_workers_through_a_checkpoint():
    old = EntityHistory(FIELDS, max_entities=100, capacity=4)
    keys = [f"card{i}" for i in range(20)]
    for t in range(6):  # wraps the ring buffer and grows it
        _append(old, keys, float(t), float(t), keep_after=-1.0)
    moving = [k for k in keys if partition_of(k, 4) == 1]
    state = checkpoint.from_bytes(checkpoint.to_bytes(old.state(old.slots(moving))))
    new = EntityHistory(FIELDS, max_entities=100, capacity=4)
    _append(new, ["other"], 0.0, 99.0)
    new.load(state, merge=True)
    for key in moving:
        got = new.gather(new.slots([key]))["amount"][0]
        want = old.gather(old.slots([key]))["amount"][0]
        assert sorted(got[np.isfinite(got)].tolist()) == sorted(want.tolist())
    assert new.gather(new.slots(["other"]))["amount"][0].max() == 99.0


@pytest.mark.parametrize(
    "key, expected",  # the Java client's partitions for 1000 partitions (kafka-python's test vectors)
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_of_matches_the_java_default_partitioner(key, expected):
    assert partition_of(key, 1000) == expected


def test_pure_python_murmur2_matches_kafka_python():
    from kafka.partitioner.default import murmur2

    rng = np.random.default_rng(1)
    for n in range(0, 40):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert murmur2_py(data) & 0xFFFFFFFF == murmur2(data) & 0xFFFFFFFF
    assert partition_of("card_42", 12) == partition_of(b"card_42", 12)


def test_a_released_row_is_reused_and_reset_before_the_next_key_gets_it():
    resets: list[int] = []
    slots = EntitySlots(3, grow=lambda need: need, reset=resets.append)
    a, b = slots.slot("a"), slots.slot("b")
    assert slots.release("a") == a and "a" not in slots and slots.release("zz") is None
    assert slots.slot("c") == a and resets[-1] == a  # the freed row, reset for its new key
    assert slots.slot("b") == b and list(slots.order) == ["c", "b"] and slots.evictions == 0
