"""Moves each partition's card features with the partition, from outside the runner.

The runner does not (yet) restore per-partition state on assignment; this wires
`pipeline.partition_state` around a live runner the way the runner itself should:
- at every checkpoint boundary (just after a commit): save the card state of each assigned
  partition with its committed offset;
- on revoke: commit (the runner's own callback), then save and drop the leaving partitions' cards;
- on assign: merge the arriving partitions' saved cards and seek them to the saved offsets (the
  records between that offset and the group's committed one are replayed: their alerts are
  deduplicated by id, and the card features are rebuilt exactly).
Terminal features stay per worker: terminals are not partitioned like cards.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.partition_state import PartitionStateHooks, open_store
from stream_models.entity_store import partition_of


def attach_partition_state(runner: Any, location: str, group: str) -> PartitionStateHooks:
    (topic, processor), = runner.processors.items()
    features = processor.featurizer.features  # stream_models.transaction_features.TransactionFeatures
    n_partitions = int(os.environ["SW_PARTITIONS"])
    processed: dict[tuple[str, int], int] = {}  # partition -> last processed offset + 1

    def track(domain: str, events: Any, records: Any, batch: Any) -> None:
        for record in records:
            tp = (record.topic, record.partition)
            processed[tp] = max(processed.get(tp, 0), record.offset + 1)

    def cards_of(tp: tuple[str, int]) -> list[str]:
        return [c for c in features.snapshot()["cards"]["keys"] if partition_of(c, n_partitions) == tp[1]]

    hooks = PartitionStateHooks(
        open_store(location, group),
        snapshot=lambda tp: features.snapshot(card_ids=cards_of(tp)),
        restore=lambda tp, state: features.restore(state, merge_cards=True),
        offset=processed.get,
        forget=lambda tp: (features.drop_cards(cards_of(tp)), processed.pop(tp, None)),
    )
    own_on_revoke, own_on_assign = runner.on_revoke, runner.on_assign

    def on_revoke(partitions: Any) -> None:
        own_on_revoke(partitions)  # flush + commit: `processed` is now committed
        hooks.on_revoke([(str(t), int(p)) for t, p in partitions if str(t) == topic])

    def on_assign(partitions: Any) -> None:
        own_on_assign(partitions)
        seek = hooks.on_assign([(str(t), int(p)) for t, p in partitions if str(t) == topic])
        if seek:
            runner.source.seek(seek)
            processed.update(seek)

    def save_assigned(_runner: Any) -> None:
        hooks.save([tp for tp in processed if tp[0] == topic])

    runner.observers.append(track)
    runner.on_revoke, runner.on_assign = on_revoke, on_assign  # the consumer calls runner.on_* at each rebalance
    runner.checkpoint_hooks.append(save_assigned)
    return hooks
