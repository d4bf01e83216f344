"""Model sync inside the worker loop: two runners on disjoint partitions end with the same, merged model.

Each runner is the real `Runner` + `StreamProcessor` (transactions) with `WorkerModelSync` wired the way
`build_live_runner` wires it (`model_sync.enabled`): a start hook that joins, a checkpoint hook that
publishes and merges through a real compacted Kafka topic. Partition 0 carries daytime card payments of
small amounts, partition 1 night-time payments of large amounts.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from ingest.records import Record
from ingest.schemas import Transaction, encode_event
from pipeline.domains import build_processor
from pipeline.model_sync import WorkerModelSync, WorkerModelSyncConfig
from pipeline.runner import Runner, RunnerConfig
from pipeline.settings import Settings, load_settings
from sinks.memory_sink import MemorySink
from tests.reliability import harness as h
from tests.small_models import SMALL_PARAMS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOPIC, N, T0 = "tx", 640, 1.75e9


class ListSource:
    """The records of one partition, polled in order; `commit` remembers the offsets."""

    def __init__(self, records: list[Record]) -> None:
        self.records, self.pos, self.committed = records, 0, {}

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.records)

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        out = self.records[self.pos : self.pos + max_records]
        self.pos += len(out)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.committed.update(offsets)


class DLQ:
    def add(self, rejects: Any) -> None:
        raise AssertionError(f"unexpected rejects {rejects}")

    def flush(self) -> None:
        return None


def half(partition: int, n: int, seed: int) -> list[Record]:
    """Partition 0: small daytime amounts on cards a*; partition 1: large night amounts on cards b*."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hour = 10.0 + 6.0 * (i % 40) / 40 if partition == 0 else 1.0 + 3.0 * (i % 40) / 40  # time order
        ts = T0 + 86_400.0 * (i // 40) + 3_600.0 * hour
        amount = float(rng.gamma(2.0, 10.0 if partition == 0 else 400.0))
        card = f"{'ab'[partition]}{i % 16}"
        tx = Transaction(event_id=f"p{partition}-{i}", ts=ts, card_id=card, terminal_id=f"t{partition}-{i % 7}",
                         amount=amount)
        out.append(Record(TOPIC, partition, i, -1, card.encode(), encode_event(tx)))
    return out


def settings() -> Settings:
    return load_settings(runner={"device": "cpu"}, transactions={
        "warmup_events": 64, "threshold_warmup": 32, "learn_every": 16, "params": SMALL_PARAMS, "auto_promote": False,
        "steps_per_update": 4, "threshold_window": 200})


def make_runner(records: list[Record], sync: WorkerModelSync | None) -> tuple[Runner, list[np.ndarray]]:
    processor = build_processor(settings(), "transactions")
    rows: list[np.ndarray] = []
    own = processor.featurizer.update

    def update(events: Any) -> Any:
        keys, inputs, ready = own(events)
        rows.append(inputs["rows"].copy())  # (B, F)
        return keys, inputs, ready

    processor.featurizer.update = update
    runner = Runner(ListSource(records), MemorySink(), DLQ(), {TOPIC: processor},
                    config=RunnerConfig(max_records=50, poll_timeout_ms=0, commit_interval_s=0.0,
                                        checkpoint_interval_s=0.0))
    if sync is not None:  # as build_live_runner does with model_sync.enabled
        runner.start_hooks.append(sync.start)
        runner.checkpoint_hooks.append(sync)
    return runner, rows


def champion(runner: Runner) -> Any:
    (processor,) = runner.processors.values()
    return processor.detectors()[processor.detector_name]


def float_weights(state: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "optimizer":
            continue
        if isinstance(value, dict):
            out.update(float_weights(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            out[prefix + key] = value
    return out


def mean_score(detector: Any, state: dict[str, Any] | None, X: np.ndarray) -> float:
    if state is not None:
        detector = copy.deepcopy(detector)
        detector.load_state_dict(state)
    return float(np.mean(detector.score_many(X)))


def test_two_runners_on_disjoint_partitions_end_with_the_merged_model(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"{unique_name}-models"
    syncs = [WorkerModelSync(kafka_bootstrap, WorkerModelSyncConfig(topic=topic, worker_id=f"w{i}", interval_s=0.0,
                                                                     timeout_s=30.0)) for i in range(2)]
    try:
        (a, a_rows), (b, b_rows) = make_runner(half(0, N, 1), syncs[0]), make_runner(half(1, N, 2), syncs[1])
        alone, _ = make_runner(half(1, N, 2), None)  # partition 1 without any sync: the baseline on partition 0
        before: dict[str, Any] = {}
        a.checkpoint_hooks.insert(0, lambda r: before.setdefault("a", copy.deepcopy(champion(r).state_dict())))

        a.run()  # joins an empty topic; at its last checkpoint publishes its model, finds no peer yet
        assert syncs[0].rounds == 1 and not syncs[0].syncs[("transactions", "dense_autoencoder")].peers
        b.run()  # joins from a's model; at its last checkpoint publishes its own and merges a's
        assert syncs[1].rounds == 1
        syncs[0].sync(a)  # a's next checkpoint boundary: merges b's model
        alone.run()

        wa, wb = float_weights(champion(a).state_dict()), float_weights(champion(b).state_dict())
        assert wa and set(wa) == set(wb)
        unequal = [k for k in wa if not torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6)]
        assert not unequal, f"weights differ after a sync round: {unequal}"
        assert not torch.allclose(float_weights(before["a"])["net.0.weight"], wa["net.0.weight"])  # a took b's in

        X0, X1 = np.concatenate(a_rows), np.concatenate(b_rows)
        merged = champion(a)
        scores = {
            "merged_p0": mean_score(merged, None, X0), "merged_p1": mean_score(merged, None, X1),
            "p0_only_on_p1": mean_score(merged, before["a"], X1),
            "p1_only_on_p0": mean_score(champion(alone), None, X0),
        }
        # Each half is reconstructed better by the merged model than by a model that never saw it.
        assert scores["merged_p1"] < scores["p0_only_on_p1"], scores
        assert scores["merged_p0"] < scores["p1_only_on_p0"], scores
        h.record_figures("model_sync_runners", events_per_worker=N,
                         mean_scores={k: round(v, 3) for k, v in scores.items()})
    finally:
        for sync in syncs:
            sync.close()
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
        try:
            admin.delete_topics([f"{topic}.transactions.dense_autoencoder"])
        except Exception:
            pass
        admin.close()
