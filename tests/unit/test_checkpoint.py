"""Checkpoints: atomic writes, faithful round trips, and refusal of unsafe pickles."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from stream_models import checkpoint
from stream_models.errors import CheckpointError, ModelError


class _RunsShell:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "features": {"mean": np.arange(6, dtype=np.float32).reshape(2, 3), "seen": np.array([True, False])},
        "keys": np.array(["card_1", "card_22"]),
        "threshold": {"value": float("inf"), "n": np.int64(7)},
        "offsets": {("transactions", 0): 42, ("transactions", 1): 7},
        "model_version": "mlp-3",
        "config": {"hidden": [64, 32], "dropout": None, "bn": False},
        "raw": b"\x00\x01",
    }


def test_round_trip_restores_every_kind_of_value(tmp_path):
    payload = _payload()
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, payload)
    loaded = checkpoint.load(path)

    for name, tensor in payload["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert loaded["optimizer"]["param_groups"] == payload["optimizer"]["param_groups"]
    assert isinstance(loaded["features"]["mean"], np.ndarray)
    np.testing.assert_array_equal(loaded["features"]["mean"], payload["features"]["mean"])
    assert loaded["features"]["mean"].dtype == np.float32
    assert loaded["features"]["seen"].dtype == np.bool_
    assert loaded["keys"].tolist() == ["card_1", "card_22"]
    assert loaded["threshold"] == {"value": float("inf"), "n": 7}
    assert loaded["offsets"] == {("transactions", 0): 42, ("transactions", 1): 7}
    assert loaded["model_version"] == "mlp-3"
    assert loaded["config"] == payload["config"]
    assert loaded["raw"] == b"\x00\x01"


def test_loaded_state_restores_a_model_exactly(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    checkpoint.save(tmp_path / "m.pt", {"model": model.state_dict()})
    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    clone.load_state_dict(checkpoint.load(tmp_path / "m.pt")["model"])
    x = torch.randn(5, 4)
    assert torch.equal(model(x), clone(x))


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    checkpoint.save(path, {"version": 1})
    checkpoint.save(path, {"version": 2})
    assert checkpoint.load(path) == {"version": 2}
    assert os.listdir(path.parent) == ["ckpt.pt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, {"version": 1})
    with pytest.raises(CheckpointError):
        checkpoint.save(path, {"version": 2, "bad": object()})
    assert checkpoint.load(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize(
    "bad",
    [{"x": object()}, {"x": {1, 2}}, {"x": np.array([object()], dtype=object)}, {("a", object()): 1}],
)
def test_values_that_cannot_be_loaded_safely_are_refused_at_save(bad):
    with pytest.raises(CheckpointError):
        checkpoint.to_bytes(bad)


def test_malicious_raw_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"payload": _RunsShell(str(marker))}))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert not marker.exists()


def test_malicious_torch_zip_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": checkpoint.FORMAT, "format_version": 1, "payload": {"x": _RunsShell(str(marker))}}, path
    )
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert not marker.exists()


def test_malicious_bytes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError):
        checkpoint.from_bytes(pickle.dumps(_RunsShell(str(marker))))
    assert not marker.exists()


def test_corrupt_missing_and_foreign_files_raise_checkpoint_error(tmp_path):
    good = checkpoint.to_bytes({"a": torch.ones(1000)})
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"weight": torch.ones(2)}, tmp_path / "foreign.pt")
    for name in ("truncated.pt", "foreign.pt", "missing.pt"):
        with pytest.raises(CheckpointError):
            checkpoint.load(tmp_path / name)


def test_checkpoint_error_is_a_model_error():
    assert issubclass(CheckpointError, ModelError)
    assert CheckpointError("x").retriable is False


def test_bytes_round_trip_matches_file_round_trip():
    payload = {"w": torch.arange(4.0), "a": np.ones((2, 2), dtype=np.int16), "nested": [{"t": (1, "x")}]}
    loaded = checkpoint.from_bytes(checkpoint.to_bytes(payload))
    assert torch.equal(loaded["w"], payload["w"])
    np.testing.assert_array_equal(loaded["a"], payload["a"])
    assert loaded["a"].dtype == np.int16
    assert loaded["nested"] == [{"t": (1, "x")}]


def test_cuda_or_noncontiguous_inputs_come_back_as_plain_cpu_values():
    arr = np.arange(12.0).reshape(3, 4)[:, ::2]
    big_endian = np.arange(3, dtype=">i4")
    loaded = checkpoint.from_bytes(checkpoint.to_bytes({"a": arr, "b": big_endian, "t": torch.ones(2)}))
    np.testing.assert_array_equal(loaded["a"], arr)
    np.testing.assert_array_equal(loaded["b"], big_endian)
    assert loaded["t"].device.type == "cpu"


def test_workers_sharing_a_state_dir_each_claim_their_own_checkpoint_file(tmp_path) -> None:
    from stream_models.checkpoint import claim

    base = tmp_path / "g-transactions.ckpt"
    first, first_lock = claim(base)
    second, second_lock = claim(base)
    assert first == base and second == tmp_path / "g-transactions-worker2.ckpt"
    second_lock.close()  # that worker died: a restarted one takes its file back, not the live worker's
    again, again_lock = claim(base)
    assert again == second
    first_lock.close()
    again_lock.close()


def test_a_background_write_holds_the_state_of_its_submission_and_reports_its_failure(tmp_path) -> None:
    """The worker goes on changing its models while the writer thread saves: the file holds the state as it was
    when the checkpoint was taken, and a write that failed is raised at the next submit or wait."""
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    writer = checkpoint.BackgroundWriter()
    writer.submit(tmp_path / "ckpt.pt", {"model": model.state_dict(), "seen": np.arange(3)})
    with torch.no_grad():
        model.weight.add_(1.0)  # the live parameters move on at once
    writer.wait()
    saved = checkpoint.load(tmp_path / "ckpt.pt")
    torch.testing.assert_close(saved["model"]["weight"], before["weight"])
    (tmp_path / "file").write_text("a file where a directory should be")
    writer.submit(tmp_path / "file" / "ckpt.pt", {"seen": 1})
    with pytest.raises(OSError):
        writer.wait()


@pytest.mark.skipif(not checkpoint.can_fork(), reason="forked checkpoints: Linux without a CUDA context")
def test_a_forked_write_saves_the_state_at_the_fork_and_reports_a_failed_child(tmp_path) -> None:
    """The periodic checkpoint of a worker: a child process saves the state as it was at the fork while the
    worker's models move on, and a child that failed is raised at the next submit or wait, naming the file."""
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    writer = checkpoint.BackgroundWriter()
    writer.submit_forked(tmp_path / "ckpt.pt", lambda: {"model": model.state_dict(), "ids": [str(i) for i in range(99)]})
    with torch.no_grad():
        model.weight.add_(1.0)
    writer.wait()
    saved = checkpoint.load(tmp_path / "ckpt.pt")
    torch.testing.assert_close(saved["model"]["weight"], before["weight"])
    assert saved["ids"][-1] == "98"
    writer.submit_forked(tmp_path / "bad.pt", lambda: {"model": object()})
    with pytest.raises(CheckpointError, match="bad.pt"):
        writer.wait()
    assert not (tmp_path / "bad.pt").exists()


def test_docstring_examples() -> None:
    import doctest

    assert doctest.testmod(checkpoint).failed == 0


def test_long_lists_of_strings_round_trip_exactly_and_cheaply() -> None:
    """Event ids and entity keys travel as one tensor (not 100k pickled str objects), and come back as the same
    list: unicode, empty strings and a NUL inside or at the end included."""
    ids = [f"tx-{i:09d}" for i in range(1_000)] + ["", "karte-ü-€", "a\x00b", "ends-in-nul\x00"]
    for values in (ids, ids[:-1], ["same"] * 100, [""] * 100):
        envelope = checkpoint._envelope({"ids": values})
        assert checkpoint.from_bytes(checkpoint._serialise(envelope))["ids"] == values
    assert isinstance(checkpoint._envelope({"ids": ids[:-1]})["payload"]["ids"], dict), "packed into one tensor"
    keys = np.array(ids[:-1]).reshape(-1, 1)  # numpy str arrays go the same way
    np.testing.assert_array_equal(checkpoint.from_bytes(checkpoint.to_bytes({"keys": keys}))["keys"], keys)


@pytest.mark.skipif(not checkpoint.can_fork(), reason="forked checkpoints: Linux without a CUDA context")
def test_a_forked_write_does_not_keep_the_workers_checkpoint_lock(tmp_path) -> None:
    """A worker killed while its checkpoint child still writes: the restarted worker takes back the same file."""
    import time

    path, lock = checkpoint.claim(tmp_path / "group.ckpt")
    started = tmp_path / "child-started"

    def build() -> dict[str, int]:
        started.touch()
        time.sleep(1.0)
        return {"n": 1}

    writer = checkpoint.BackgroundWriter()
    writer.submit_forked(path, build)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.close()  # the worker is gone; its child is still writing
    again, lock = checkpoint.claim(tmp_path / "group.ckpt")
    assert again == path
    writer.wait()
    lock.close()
    assert checkpoint.load(path)["n"] == 1
