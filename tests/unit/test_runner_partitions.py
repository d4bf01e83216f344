"""The runner's partition lifecycle with in-memory fakes: lost partitions and failed revoke commits rewind
uncommitted progress; partitions hand their entity state over through a partition-state store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.errors import BrokerUnavailable
from ingest.records import Record
from ingest.schemas import Transaction, encode_event
from pipeline.domains import build_processor
from pipeline.partition_state import DirectoryPartitionStateStore
from pipeline.runner import Runner, RunnerConfig
from sinks.memory_sink import MemorySink
from stream_models.entity_store import partition_of
from tests.unit.test_runner_domains import small_settings
from tests.unit.test_runner_loop import LABELS, TOPIC, AmountProcessor, ListDLQ, tx_records

T0 = 1.75e9
TP = tuple[str, int]


class GroupSource:
    """A consumer-group member over in-memory partitions: positions start at the group's committed offsets
    on assignment (as in Kafka), `seek` moves them, and `script[n]` runs at the n-th poll (rebalances)."""

    def __init__(self, records: list[Record], group: dict[TP, int], assigned: set[TP]) -> None:
        self.log: dict[TP, list[Record]] = {}
        for r in records:
            self.log.setdefault((r.topic, r.partition), []).append(r)
        self.group = group
        self.assigned: set[TP] = set()
        self.pos: dict[TP, int] = {}
        self.polls = 0
        self.script: dict[int, Any] = {}
        self.commits_fail = False
        self.assign(assigned)

    def assign(self, partitions: set[TP]) -> None:
        self.assigned = set(partitions)
        self.pos = {tp: self.group.get(tp, 0) for tp in self.assigned}

    @property
    def exhausted(self) -> bool:
        return all(self.pos[tp] >= len(self.log.get(tp, [])) for tp in self.assigned) and not self.pending_script

    @property
    def pending_script(self) -> bool:
        return any(n > self.polls for n in self.script)

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        self.polls += 1
        if self.polls in self.script:
            self.script[self.polls]()
            return []
        out: list[Record] = []
        share = max(1, max_records // max(1, len(self.assigned)))  # every partition moves on
        for tp in sorted(self.assigned):
            take = self.log.get(tp, [])[self.pos[tp] : self.pos[tp] + min(share, max_records - len(out))]
            out.extend(take)
            self.pos[tp] += len(take)
        return out

    def commit(self, offsets: dict[TP, int]) -> None:
        if self.commits_fail:
            raise BrokerUnavailable("broker down")
        self.group.update(offsets)

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def seek(self, offsets: dict[TP, int]) -> None:
        for tp, off in offsets.items():
            assert tp in self.assigned, f"seek of unassigned {tp}"
            self.pos[tp] = off


def _runner(source: Any, processor: Any, tmp_path: Path | None, **kw: Any) -> Runner:
    config = RunnerConfig(max_records=5, poll_timeout_ms=0, commit_interval_s=0.0,
                          checkpoint_interval_s=kw.pop("checkpoint_interval_s", 0.0),
                          checkpoint_path=tmp_path / "c.ckpt" if tmp_path else None)
    return Runner(source, MemorySink(), ListDLQ(), {TOPIC: processor}, labels_topic=LABELS, config=config,
                  sleep=lambda s: None, **kw)


@pytest.mark.parametrize("how", ["lost", "revoked"])
@pytest.mark.parametrize("checkpointed", [True, False])
def test_uncommitted_progress_is_discarded_and_replayed_once(how: str, checkpointed: bool, tmp_path: Path) -> None:
    """Commits fail for a while (broker away), then the partitions are lost (or revoked): the state goes back
    to the last checkpoint (or, with no checkpoint file configured, to the fresh state) and the replay makes it
    what an uninterrupted run makes."""
    records = tx_records(60, partitions=2)
    group: dict[TP, int] = {}
    source = GroupSource(records, group, {(TOPIC, 0), (TOPIC, 1)})
    processor = AmountProcessor()
    runner = _runner(source, processor, tmp_path if checkpointed else None, checkpoint_interval_s=1e-9)
    parts = sorted(source.assigned)

    def outage() -> None:
        source.commits_fail = True

    def rejoin() -> None:
        (runner.on_lost if how == "lost" else runner.on_revoke)(parts)  # a revoke's commit fails too
        source.commits_fail = False
        source.assign(set(parts))  # positions back at the group's committed offsets
        runner.on_assign(parts)

    source.script = {3: outage, 6: rejoin}
    stats = runner.run()

    assert processor.seen == 60  # a non-rewinding runner counts the redelivered events twice
    assert stats.rewinds == 1
    assert group == {(TOPIC, 0): 30, (TOPIC, 1): 30}
    # Replayed events raise alerts with the ids they had (the Redis sink deduplicates them by id).
    assert {a.event_id for a in runner.sink.alerts} == {f"e{i}" for i in range(0, 60, 5)}


def _transactions(n: int, cards: int = 12) -> list[Record]:
    """Transactions keyed by card, on the partition Kafka's default partitioner gives the card (of 4)."""
    rng = np.random.default_rng(0)
    out, offsets = [], [0] * 4
    for i in range(n):
        card = f"card-{i % cards}"
        tx = Transaction(event_id=f"e{i}", ts=T0 + 300.0 * i, card_id=card, terminal_id=f"t{i % 5}",
                         amount=float(rng.gamma(2.0, 30.0)))
        p = partition_of(card, 4)
        out.append(Record(TOPIC, p, offsets[p], -1, card.encode(), encode_event(tx)))
        offsets[p] += 1
    return out


def _feature_log(processor: Any) -> dict[str, np.ndarray]:
    """event id -> the feature row the detector saw (last scoring wins)."""
    rows: dict[str, np.ndarray] = {}
    own = processor.featurizer.update

    def update(events: Any) -> Any:
        keys, inputs, ready = own(events)
        rows.update({e.event_id: x.copy() for e, x in zip(events, inputs["rows"], strict=True)})
        return keys, inputs, ready

    processor.featurizer.update = update
    return rows


def test_partitions_move_with_their_card_state_through_the_store(tmp_path: Path) -> None:
    records = _transactions(400)
    all_parts = {(TOPIC, p) for p in range(4)}
    settings = small_settings()

    single = build_processor(settings, "transactions")
    single_rows = _feature_log(single)
    _runner(GroupSource(records, {}, all_parts), single, None).run()

    store = DirectoryPartitionStateStore(tmp_path / "states", "g")
    group: dict[TP, int] = {}
    a_proc, b_proc = build_processor(settings, "transactions"), build_processor(settings, "transactions")
    rows = _feature_log(a_proc)
    b_rows = _feature_log(b_proc)
    a_src = GroupSource(records, group, all_parts)
    a = _runner(a_src, a_proc, tmp_path / "a", partition_store=store, partition_count=lambda topic: 4)
    moving = [(TOPIC, 2), (TOPIC, 3)]

    def hand_over() -> None:
        a.on_revoke(moving)
        a_src.assign(all_parts - set(moving))

    a_src.script = {20: hand_over}
    a.run()
    assert a.stats.partitions_saved >= 4  # two on revoke, two at the final checkpoint
    assert not [c for c in a_proc.featurizer.features.card_ids() if partition_of(c, 4) in (2, 3)]

    b_src = GroupSource(records, group, set(moving))
    b = _runner(b_src, b_proc, tmp_path / "b", partition_store=store, partition_count=lambda topic: 4)
    b.on_assign(moving)
    b.run()

    assert b.stats.partitions_restored == 2
    assert group == {tp: len([r for r in records if (r.topic, r.partition) == tp]) for tp in all_parts}
    rows.update(b_rows)
    assert set(rows) == set(single_rows)
    names = a_proc.featurizer.names
    cols = [i for i, n in enumerate(names) if n.startswith(("CUSTOMER_ID_", "CARD_", "TX_"))]
    differ = [e for e in single_rows if not np.allclose(single_rows[e][cols], rows[e][cols], rtol=1e-5, atol=1e-6)]
    assert not differ, differ[:5]
    assert sorted(p.name for p in (tmp_path / "states").rglob("*.state")) == ["0.state", "1.state", "2.state",
                                                                          "3.state"]


def test_partition_handover_and_model_sync_are_off_by_default_and_set_by_settings(tmp_path: Path) -> None:
    from pipeline.settings import load_settings
    from pipeline.worker import open_partition_store

    default = load_settings()
    assert open_partition_store(default) is None and not default.model_sync.enabled
    store = open_partition_store(load_settings(state={"store": str(tmp_path)}, kafka={"group_id": "g7"}))
    assert isinstance(store, DirectoryPartitionStateStore) and store.group == "g7"
    store.save((TOPIC, 1), {"x": 1}, 5)
    assert (tmp_path / "g7" / TOPIC / "1.state").exists()


def test_a_store_without_partition_counts_is_refused() -> None:
    with pytest.raises(ValueError, match="partition_count"):
        Runner(GroupSource([], {}, set()), MemorySink(), ListDLQ(), {TOPIC: AmountProcessor()},
               partition_store=object())


def test_a_store_that_cannot_be_reached_does_not_stop_the_worker(tmp_path: Path) -> None:
    class Unmounted(DirectoryPartitionStateStore):
        def _put(self, tp: TP, data: bytes) -> None:
            raise OSError("shared directory unmounted")

    processor = build_processor(small_settings(), "transactions")
    source = GroupSource(_transactions(60), {}, {(TOPIC, p) for p in range(4)})
    runner = _runner(source, processor, None, checkpoint_interval_s=1e-9,
                     partition_store=Unmounted(tmp_path, "g"), partition_count=lambda topic: 4)
    stats = runner.run()
    assert stats.events == 60 and stats.partitions_saved == 0
    assert source.group == {tp: len(records) for tp, records in source.log.items()}  # every offset committed


def test_the_first_commit_comes_after_a_checkpoint(tmp_path: Path) -> None:
    """A worker killed before its first periodic checkpoint must not restart with fresh state at committed offsets."""
    path = tmp_path / "c.ckpt"

    class Watching(GroupSource):
        def commit(self, offsets: dict[TP, int]) -> None:
            assert path.exists(), "offsets committed before any checkpoint covered them"
            super().commit(offsets)

    source = Watching(tx_records(20, partitions=1), {}, {(TOPIC, 0)})
    runner = _runner(source, AmountProcessor(), tmp_path, checkpoint_interval_s=3600.0)
    runner.run()
    assert source.group == {(TOPIC, 0): 20} and path.exists()


def test_a_sensor_partition_moves_its_windows_alarm_state_and_quiet_counters() -> None:
    from types import SimpleNamespace as Event

    rng = np.random.default_rng(3)
    devices = [f"dev-{i}" for i in range(6)]
    readings = [Event(event_id=f"s{i}", ts=T0 + i, device_id=devices[i % 6],
                      readings={"temp": float(rng.normal()), "vib": float(rng.normal())}) for i in range(240)]
    old, new = build_processor(small_settings(), "sensors"), build_processor(small_settings(), "sensors")
    old.process(readings[:200])
    part = partition_of(devices[0], 4)
    moving = [d for d in devices if partition_of(d, 4) == part]

    new.restore_partition(old.snapshot_partition(part, 4))
    old.drop_partition(part, 4)
    assert set(new.featurizer.windows.snapshot()["devices"]) == set(moving)
    assert not set(old.featurizer.windows.snapshot()["devices"]) & set(moving)
    assert {k for k in new._since_flag} == set(moving)
    # The moved devices' windows continue exactly: the next readings give the same windows in both places.
    reference = build_processor(small_settings(), "sensors")
    reference.process(readings[:200])
    later = [e for e in readings[200:] if e.device_id in moving]
    _, X_new, ready_new = new.featurizer.update(later)
    _, X_ref, ready_ref = reference.featurizer.update(later)
    np.testing.assert_array_equal(ready_new, ready_ref)
    np.testing.assert_allclose(X_new["windows"], X_ref["windows"])
