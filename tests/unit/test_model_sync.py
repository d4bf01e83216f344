"""Federated averaging of model states and the safety of the model-sync wire format (no Kafka here)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model_sync import ModelSyncError, check_compatible, decode_model, encode_model
from stream_models.catalog import make
from stream_models.federated import merge_states


def test_float_tensors_are_averaged_by_events_seen_and_the_rest_stays_own() -> None:
    own = {"net": {"w": torch.tensor([1.0, 1.0]), "steps": torch.tensor(3)}, "optimizer": {"m": torch.ones(2)},
           "n": 10}
    peer = {"net": {"w": torch.tensor([5.0, 9.0]), "steps": torch.tensor(8)}, "optimizer": {"m": torch.zeros(2)},
            "n": 99}
    merged = merge_states(own, 300, [(peer, 100)])
    assert merged["net"]["w"].tolist() == [2.0, 3.0]  # 0.75 * own + 0.25 * peer
    assert merged["net"]["steps"].item() == 3 and merged["n"] == 10
    assert torch.equal(merged["optimizer"]["m"], torch.ones(2))


def test_no_events_anywhere_means_equal_weights() -> None:
    merged = merge_states({"w": torch.tensor([0.0])}, 0, [({"w": torch.tensor([3.0])}, 0), ({"w": torch.tensor([6.0])}, 0)])
    assert merged["w"].item() == pytest.approx(3.0)


def test_running_moments_are_pooled_like_the_union_of_the_data() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(-3, 1, (400, 2)), rng.normal(5, 2, (1200, 2))

    def moments(x: np.ndarray) -> dict:
        return {"scaler": {"mean": torch.tensor(x.mean(0)), "var": torch.tensor(x.var(0)),
                           "count": torch.tensor(float(len(x)), dtype=torch.float64)}}

    merged = merge_states(moments(a), len(a), [(moments(b), len(b))])["scaler"]
    union = np.concatenate([a, b])
    np.testing.assert_allclose(merged["mean"].numpy(), union.mean(0), rtol=1e-9)
    np.testing.assert_allclose(merged["var"].numpy(), union.var(0), rtol=1e-9)


def test_detector_states_merge_and_load_back() -> None:
    a = make("dense_autoencoder", n_features=4, hidden=(8, 2), seed=0)
    b = make("dense_autoencoder", n_features=4, hidden=(8, 2), seed=1)
    a.learn_many(np.ones((8, 4), np.float32))
    merged = merge_states(a.state_dict(), 8, [(b.state_dict(), 8)])
    a.load_state_dict(merged)
    expected = (a.state_dict()["net"]["0.weight"])
    assert torch.allclose(expected, merged["net"]["0.weight"])
    assert np.isfinite(a.score_many(np.zeros((3, 4), np.float32))).all()


def test_other_architectures_are_refused() -> None:
    small = make("dense_autoencoder", n_features=4, hidden=(8, 2), seed=0).state_dict()
    wide = make("dense_autoencoder", n_features=4, hidden=(16, 2), seed=0).state_dict()
    other_features = make("dense_autoencoder", n_features=5, hidden=(8, 2), seed=0).state_dict()
    with pytest.raises(ModelSyncError, match="tensor"):
        check_compatible(small, wide, ("optimizer",))
    with pytest.raises(ModelSyncError, match="feature_names"):
        check_compatible(small, other_features, ("optimizer",))
    check_compatible(small, make("dense_autoencoder", n_features=4, hidden=(8, 2), seed=9).state_dict(),
                     ("optimizer",))


def test_message_round_trip() -> None:
    state = {"net": {"w": torch.arange(4.0)}, "kind": "X"}
    peer = decode_model(b"w1", encode_model("w1", "v2", 1234, state))
    assert (peer.worker_id, peer.model_version, peer.events_seen) == ("w1", "v2", 1234)
    assert torch.equal(peer.state["net"]["w"], torch.arange(4.0))


def test_pickle_payload_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    with pytest.raises(ModelSyncError, match="refused"):
        decode_model(b"evil", pickle.dumps({"worker_id": "evil", "state": Exploit()}))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (b"w2", encode_model("w1", "v1", 1, {}), "does not match"),
        (None, encode_model("w1", "v1", 1, {}), "does not match"),
        (b"w1", encode_model("w1", "v1", 1, {"w": torch.tensor([1.0, math.nan])}), "NaN"),
        (b"w1", encode_model("w1", "v1", 1, {"w": torch.tensor([math.inf])}), "NaN"),
        (b"w1", b"\x00" * 32, "refused"),
        (b"w1", b"x" * 2048, "exceeds"),
    ],
)
def test_malformed_messages_are_refused(key: bytes | None, value: bytes, match: str) -> None:
    with pytest.raises(ModelSyncError, match=match):
        decode_model(key, value, max_bytes=1024 if value == b"x" * 2048 else 64 * 1024 * 1024)
