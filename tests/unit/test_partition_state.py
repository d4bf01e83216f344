"""Per-partition state store (directory backend) and the rebalance hooks built on it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.partition_state import (
    DirectoryPartitionStateStore,
    PartitionStateError,
    PartitionStateHooks,
    RedisPartitionStateStore,
    open_store,
)


def test_round_trip_keeps_arrays_tensors_and_offset(tmp_path: Path) -> None:
    store = DirectoryPartitionStateStore(tmp_path, group="g1")
    state = {"keys": ["c1", "c2"], "sums": np.array([1.5, 2.5]), "w": torch.arange(3.0), "n": 7}
    store.save(("transactions", 2), state, 1234)
    loaded, offset = store.load(("transactions", 2))  # type: ignore[misc]
    assert offset == 1234
    assert loaded["keys"] == ["c1", "c2"] and loaded["n"] == 7
    np.testing.assert_array_equal(loaded["sums"], state["sums"])
    assert torch.equal(loaded["w"], state["w"])


def test_partitions_and_groups_are_separate(tmp_path: Path) -> None:
    a, b = DirectoryPartitionStateStore(tmp_path, "g1"), DirectoryPartitionStateStore(tmp_path, "g/2")
    a.save(("t", 0), {"who": "a0"}, 1)
    a.save(("t", 1), {"who": "a1"}, 2)
    b.save(("t", 0), {"who": "b0"}, 3)
    assert a.load(("t", 0)) == ({"who": "a0"}, 1)
    assert a.load(("t", 1)) == ({"who": "a1"}, 2)
    assert b.load(("t", 0)) == ({"who": "b0"}, 3)
    assert b.load(("t", 1)) is None
    a.delete(("t", 0))
    assert a.load(("t", 0)) is None


def test_save_overwrites_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = DirectoryPartitionStateStore(tmp_path, "g")
    for offset in range(5):
        store.save(("t", 0), {"offset_seen": offset}, offset)
    assert store.load(("t", 0)) == ({"offset_seen": 4}, 4)
    files = [p.name for p in store.path(("t", 0)).parent.iterdir()]
    assert files == ["0.state"]


def test_pickled_object_in_place_of_a_state_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    store = DirectoryPartitionStateStore(tmp_path, "g")
    store.path(("t", 0)).parent.mkdir(parents=True)
    store.path(("t", 0)).write_bytes(pickle.dumps({"state": Exploit(), "offset": 1}))
    with pytest.raises(PartitionStateError):
        store.load(("t", 0))
    assert not marker.exists()


def test_record_of_another_partition_is_refused(tmp_path: Path) -> None:
    store = DirectoryPartitionStateStore(tmp_path, "g")
    store.save(("t", 0), {"x": 1}, 5)
    store.path(("t", 1)).write_bytes(store.path(("t", 0)).read_bytes())  # copied under the wrong name
    with pytest.raises(PartitionStateError, match="not of"):
        store.load(("t", 1))


def test_negative_offset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PartitionStateError):
        DirectoryPartitionStateStore(tmp_path, "g").save(("t", 0), {}, -1)


def test_open_store_picks_backend_from_location(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path, "g"), DirectoryPartitionStateStore)
    store = open_store("redis://127.0.0.1:1/0", "g")  # no connection is made until used
    assert isinstance(store, RedisPartitionStateStore)
    assert store.key(("tx", 4)) == "streamwarden:partition-state:g:tx:4"


def test_hooks_move_a_partition_between_two_workers(tmp_path: Path) -> None:
    """Worker A saves what it built for partition 1 on revoke; worker B restores it and seeks there."""
    store = DirectoryPartitionStateStore(tmp_path, "g")
    a_state = {("t", 0): {"cards": {"c0": 3}}, ("t", 1): {"cards": {"c1": 5, "c9": 1}}}
    a_offsets = {("t", 0): 40, ("t", 1): 17}
    b_state: dict = {("t", 2): {"cards": {"c2": 2}}}
    forgotten: list = []

    worker_a = PartitionStateHooks(store, snapshot=lambda tp: a_state[tp], restore=lambda tp, s: None,
                                   offset=a_offsets.get, forget=forgotten.append)
    worker_b = PartitionStateHooks(store, snapshot=lambda tp: b_state[tp],
                                   restore=lambda tp, s: b_state.__setitem__(tp, s), offset=lambda tp: None)
    worker_a.on_revoke([("t", 1)])
    assert forgotten == [("t", 1)]
    seek = worker_b.on_assign([("t", 1), ("t", 3)])  # t[3] was never saved: starts empty, no seek
    assert seek == {("t", 1): 17}
    assert b_state[("t", 1)] == {"cards": {"c1": 5, "c9": 1}}
    assert (worker_a.saved, worker_b.restored) == (1, 1)


def test_hooks_skip_unreadable_state_and_partitions_never_committed(tmp_path: Path) -> None:
    store = DirectoryPartitionStateStore(tmp_path, "g")
    store.path(("t", 0)).parent.mkdir(parents=True)
    store.path(("t", 0)).write_bytes(b"\x80garbage")
    restored: list = []
    hooks = PartitionStateHooks(store, snapshot=lambda tp: {"x": 1}, restore=lambda tp, s: restored.append(tp),
                                offset=lambda tp: None)
    assert hooks.on_assign([("t", 0)]) == {}
    assert restored == []
    hooks.on_revoke([("t", 5)])  # nothing committed on t[5]: nothing to save
    assert store.load(("t", 5)) is None
