"""Entity store: batched lookups, LRU eviction, TTL, Kafka partitioning, snapshot/restore."""

from __future__ import annotations

import numpy as np
import pytest

from stream_models import checkpoint
from stream_models.entity_store import EntityStore, FieldSpec, murmur2_py, partition_of
from stream_models.errors import ModelError

FIELDS = {
    "count": np.int64,
    "last_amount": (np.float32, (), np.nan),
    "hist": FieldSpec(np.float64, (3,), 1.0),
}


def test_repeated_keys_in_a_batch_share_one_row_and_new_rows_start_at_fill_values():
    store = EntityStore(FIELDS, max_entities=10)
    rows = store.lookup_or_insert(["a", "b", "a", "c", "b"])
    assert rows[0] == rows[2] and rows[1] == rows[4]
    assert len(set(rows.tolist())) == 3 and len(store) == 3
    assert (store["count"][rows] == 0).all()
    assert np.isnan(store["last_amount"][rows]).all()
    assert (store["hist"][rows] == 1.0).all() and store["hist"].shape == (10, 3)


def test_batched_updates_match_one_by_one_updates():
    rng = np.random.default_rng(0)
    keys = [f"card{k}" for k in rng.integers(0, 20, 500)]
    amounts = rng.random(500)
    batched, single = EntityStore(FIELDS, 100), EntityStore(FIELDS, 100)
    for start in range(0, 500, 50):
        rows = batched.lookup_or_insert(keys[start : start + 50])
        np.add.at(batched["count"], rows, 1)
        np.add.at(batched["hist"][:, 0], rows, amounts[start : start + 50])
    for key, amount in zip(keys, amounts, strict=True):
        row = single.lookup_or_insert([key])
        single["count"][row] += 1
        single["hist"][row, 0] += amount
    for key in set(keys):
        a, s = batched.lookup([key])[0], single.lookup([key])[0]
        assert batched["count"][a] == single["count"][s]
        assert batched["hist"][a, 0] == pytest.approx(single["hist"][s, 0])


def test_least_recently_used_entities_are_evicted_at_capacity():
    store = EntityStore({"count": np.int64}, max_entities=3)
    store.lookup_or_insert(["a", "b", "c"])
    store.lookup_or_insert(["a"])  # b is now the least recently used
    rows = store.lookup_or_insert(["d"])
    assert sorted(store.keys()) == ["a", "c", "d"]
    assert store.evicted == 1 and len(store) == 3
    assert store["count"][rows[0]] == 0
    store["count"][store.lookup(["c"])] = 5
    store.lookup_or_insert(["e", "f"])  # lookup() is no use: c and a are the least recently used
    assert sorted(store.keys()) == ["d", "e", "f"]


def test_eviction_never_drops_entities_of_the_current_batch():
    store = EntityStore({"count": np.int64}, max_entities=4)
    store.lookup_or_insert(["a", "b", "c", "d"])
    rows = store.lookup_or_insert(["a", "b", "x", "y"])
    assert sorted(store.keys()) == ["a", "b", "x", "y"]
    assert len(set(rows.tolist())) == 4
    with pytest.raises(ModelError):
        store.lookup_or_insert(["p", "q", "r", "s", "t"])


def test_chunked_eviction_frees_several_rows_at_once_but_never_exceeds_capacity():
    store = EntityStore({"count": np.int64}, max_entities=100, evict_chunk=10)
    for i in range(0, 300, 7):
        store.lookup_or_insert([f"k{j}" for j in range(i, i + 7)])
        assert len(store) <= 100
    assert all(f"k{j}" in store for j in range(287, 294))  # the most recent survive


def test_idle_entities_expire_by_event_time():
    store = EntityStore({"count": np.int64}, max_entities=10, ttl_s=60.0)
    rows = store.lookup_or_insert(["a", "b"], ts=np.array([0.0, 50.0]))
    store["count"][rows] = 7
    rows = store.lookup_or_insert(["a", "b"], ts=np.array([100.0, 100.0]))
    assert store["count"][rows].tolist() == [0, 7]  # a was idle for 100 s > ttl, b for 50 s
    assert store.expired == 1
    assert store.expire(now=200.0) == 2 and len(store) == 0


def test_expired_entities_are_freed_before_live_ones_are_evicted():
    store = EntityStore({"count": np.int64}, max_entities=2, ttl_s=10.0)
    store.lookup_or_insert(["old"], ts=0.0)
    store.lookup_or_insert(["recent"], ts=95.0)
    store.lookup_or_insert(["new"], ts=100.0)
    assert sorted(store.keys()) == ["new", "recent"] and store.evicted == 0


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


def test_a_partition_moves_between_workers_with_snapshot_and_restore():
    n_partitions = 4
    keys = [f"card{i}" for i in range(200)]
    old = EntityStore(FIELDS, max_entities=500)
    rows = old.lookup_or_insert(keys, ts=np.arange(200.0))
    old["count"][rows] = np.arange(200)
    old["hist"][rows, 2] = np.arange(200) * 0.5

    moved = checkpoint.from_bytes(
        checkpoint.to_bytes(old.snapshot(partitions=[1], n_partitions=n_partitions))
    )
    expected = [k for k in keys if partition_of(k, n_partitions) == 1]
    assert sorted(moved["keys"]) == sorted(expected) and 0 < len(expected) < 200

    new = EntityStore(FIELDS, max_entities=500)
    new.lookup_or_insert(["other"])
    new.restore(moved)
    assert old.drop_partitions([1], n_partitions) == len(expected)
    for key in expected:
        i = keys.index(key)
        row = new.lookup([key])[0]
        assert new["count"][row] == i and new["hist"][row, 2] == i * 0.5
        assert key not in old
    assert "other" in new and len(old) == 200 - len(expected)


def test_snapshot_keeps_lru_order_and_restore_replaces_existing_entities():
    store = EntityStore({"count": np.int64}, max_entities=3)
    store.lookup_or_insert(["a", "b", "c"])
    store.lookup_or_insert(["a"])
    snap = store.snapshot()
    assert snap["keys"][-1] == "a"
    clone = EntityStore({"count": np.int64}, max_entities=3)
    clone.lookup_or_insert(["a"])
    clone["count"][0] = 99
    clone.load_state_dict(snap)
    assert clone["count"][clone.lookup(["a"])[0]] == 0
    clone.lookup_or_insert(["z"])  # b was least recently used in the original, so it goes first
    assert sorted(clone.keys()) == ["a", "c", "z"]


def test_restore_refuses_a_snapshot_with_other_fields():
    snap = EntityStore({"count": np.int64}, 3)
    snap.lookup_or_insert(["a"])
    with pytest.raises(ModelError):
        EntityStore({"sum": np.float64}, 3).restore(snap.snapshot())


def test_snapshot_of_partitions_needs_the_partition_count():
    with pytest.raises(ModelError):
        EntityStore({"count": np.int64}, 3).snapshot(partitions=[0])


def test_removed_rows_are_reused():
    store = EntityStore({"count": np.int64}, max_entities=2)
    store.lookup_or_insert(["a", "b"])
    assert store.remove(["a", "missing"]) == 1
    store.lookup_or_insert(["c"])
    assert sorted(store.keys()) == ["b", "c"] and store.evicted == 0
