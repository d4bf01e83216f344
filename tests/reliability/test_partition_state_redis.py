"""The Redis backend of the per-partition state store, against the real Redis."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.partition_state import (
    PartitionStateError,
    RedisPartitionStateConfig,
    RedisPartitionStateStore,
)

pytestmark = pytest.mark.redis


def test_two_workers_share_partition_states_through_redis(redis_url: str, redis_prefix: str) -> None:
    config = RedisPartitionStateConfig(prefix=redis_prefix)
    worker_a = RedisPartitionStateStore(redis_url, "group-1", config=config)
    worker_b = RedisPartitionStateStore(redis_url, "group-1", config=config)
    other_group = RedisPartitionStateStore(redis_url, "group-2", config=config)
    try:
        sums = np.linspace(0, 1, 1000)
        worker_a.save(("transactions", 4), {"cards": ["c1", "c2"], "sums": sums}, 5_000)
        state, offset = worker_b.load(("transactions", 4))  # type: ignore[misc]
        assert offset == 5_000 and state["cards"] == ["c1", "c2"]
        np.testing.assert_array_equal(state["sums"], sums)
        assert other_group.load(("transactions", 4)) is None
        assert worker_b.load(("transactions", 5)) is None
        worker_b.save(("transactions", 4), {"cards": []}, 6_000)  # the new owner moves on
        assert worker_a.load(("transactions", 4)) == ({"cards": []}, 6_000)
        worker_a.delete(("transactions", 4))
        assert worker_b.load(("transactions", 4)) is None
    finally:
        for store in (worker_a, worker_b, other_group):
            store.close()


def test_pickle_planted_in_redis_is_refused_not_run(redis_url: str, redis_prefix: str, redis_client,
                                                    tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    store = RedisPartitionStateStore(redis_url, "g", config=RedisPartitionStateConfig(prefix=redis_prefix))
    try:
        redis_client.set(store.key(("t", 0)), pickle.dumps({"state": Exploit(), "offset": 1}))
        with pytest.raises(PartitionStateError, match="refused"):
            store.load(("t", 0))
        assert not marker.exists()
    finally:
        store.close()


def test_states_expire_when_a_ttl_is_set(redis_url: str, redis_prefix: str, redis_client) -> None:
    store = RedisPartitionStateStore(redis_url, "g", config=RedisPartitionStateConfig(prefix=redis_prefix, ttl_s=30))
    try:
        store.save(("t", 1), {"x": 1}, 9)
        assert 0 < redis_client.ttl(store.key(("t", 1))) <= 30
    finally:
        store.close()
