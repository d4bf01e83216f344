"""Model sync through a real compacted Kafka topic: FedAvg of two workers trained on different data."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.model_sync import ModelSync, ModelSyncConfig
from stream_models.catalog import make
from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

F = 8


class TwoClusters:
    """Normal data on two different 2-D subspaces (one per worker) and off-subspace anomalies."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.W = [self.rng.normal(size=(2, F)) for _ in range(2)]
        self.mu = [self.rng.normal(size=F) * 2 for _ in range(2)]

    def normal(self, which: int, n: int) -> np.ndarray:
        z = self.rng.normal(size=(n, 2))
        return (z @ self.W[which] + self.mu[which] + 0.05 * self.rng.normal(size=(n, F))).astype(np.float32)

    def anomalies(self, n: int) -> np.ndarray:
        return (self.rng.normal(size=(n, F)) * 2 + (self.mu[0] + self.mu[1]) / 2).astype(np.float32)


def _detector():  # type: ignore[no-untyped-def]
    return make("dense_autoencoder", n_features=F, hidden=(16, 4), seed=0, lr=3e-3)


def _train(det, X: np.ndarray, steps: int, rng: np.random.Generator) -> int:  # type: ignore[no-untyped-def]
    for _ in range(steps):
        det.learn_many(X[rng.integers(0, len(X), 64)])
    return steps * 64


def _auc(det, normal: np.ndarray, anomalies: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """How well `det` tells normal rows (low scores wanted) from anomalies (high)."""
    scores = det.score_many(np.concatenate([normal, anomalies]))
    return float(roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(anomalies))], scores))


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    try:
        response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: entry["value"] for name, entry in response["topic"][topic].items()}
    finally:
        admin.close()


def test_two_workers_converge_to_a_model_of_both_distributions(kafka_bootstrap: str, unique_name: str,
                                                              tmp_path: Path, caplog) -> None:
    data, rng = TwoClusters(seed=0), np.random.default_rng(1)
    halves = [data.normal(0, 3000), data.normal(1, 3000)]
    held_out = [data.normal(0, 400), data.normal(1, 400)]
    anomalies = data.anomalies(400)

    alone = [_detector(), _detector()]
    for det, X in zip(alone, halves, strict=True):
        _train(det, X, 320, rng)
    unsynced_cross = [_auc(alone[0], held_out[1], anomalies), _auc(alone[1], held_out[0], anomalies)]

    topic = f"{unique_name}-models"
    workers = [_detector(), _detector()]
    syncs = [ModelSync(kafka_bootstrap, ModelSyncConfig(topic=topic, worker_id=f"worker-{i}")) for i in range(2)]
    joiner = None
    try:
        assert _topic_config(kafka_bootstrap, topic)["cleanup.policy"] == "compact"
        seen = [0, 0]
        for _round in range(4):
            for i in range(2):
                seen[i] += _train(workers[i], halves[i], 80, rng)
                syncs[i].publish(workers[i].state_dict(), seen[i])
            for i in range(2):
                assert syncs[i].adopt(workers[i], seen[i]) == 1  # the other worker's model

        # A malicious message on the topic: refused, logged, never executed; the worker goes on.
        marker = tmp_path / "executed"

        class Exploit:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (Path.touch, (marker,))

        syncs[0].producer.send(topic, b"evil", pickle.dumps({"worker_id": "evil", "state": Exploit()}))
        syncs[0].producer.flush()
        with caplog.at_level(logging.WARNING, logger="pipeline.model_sync"):
            syncs[1].catch_up()
        assert not marker.exists()
        assert syncs[1].rejected == 1 and "evil" not in syncs[1].peers
        assert any("refused" in r.getMessage() for r in caplog.records)

        synced_aucs = []
        for i in range(2):
            synced = [_auc(workers[i], held_out[0], anomalies), _auc(workers[i], held_out[1], anomalies)]
            assert min(synced) >= 0.9, synced
            assert min(synced) > max(unsynced_cross) + 0.1, (synced, unsynced_cross)
            synced_aucs.append(synced)

        # A worker joining later reads the topic from the beginning and starts from the merged model.
        newcomer = _detector()
        joiner = ModelSync(kafka_bootstrap, ModelSyncConfig(topic=topic, worker_id="worker-new"))
        assert joiner.join(newcomer) == 2
        assert joiner.rejected == 1  # it meets the malicious message too
        joined = [_auc(newcomer, held_out[0], anomalies), _auc(newcomer, held_out[1], anomalies)]
        assert min(joined) >= 0.9, joined
        h.record_figures("model_sync", rounds=4, unsynced_auc_on_other_half=[round(a, 3) for a in unsynced_cross],
                         synced_auc_both_halves=[[round(a, 3) for a in pair] for pair in synced_aucs],
                         joiner_auc=[round(a, 3) for a in joined], malicious_payloads_refused=syncs[1].rejected)
    finally:
        for sync in [*syncs, *([joiner] if joiner else [])]:
            sync.close()
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
        try:
            admin.delete_topics([topic])
        except Exception:
            pass
        admin.close()
