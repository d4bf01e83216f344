"""OnlineLearner: delayed labels, normal-only learning for unsupervised models, cadence, balanced
replay, the drift LR boost, and state round trips."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_models.errors import ModelError
from stream_models.learner import OnlineLearner, OnlineLearnerConfig
from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig

DAY = 86_400.0


class Recorder:
    """A detector that remembers what it was taught (rows are tagged by their first feature)."""

    def __init__(self) -> None:
        self.batches: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.lr = 0.01

    def learn_many(self, X, y=None):
        self.batches.append((np.asarray(X).copy(), None if y is None else np.asarray(y).copy()))

    @property
    def learning_rate(self) -> float:
        return self.lr

    def set_learning_rate(self, lr: float) -> None:
        self.lr = lr

    def taught(self) -> dict[int, set]:
        out: dict[int, set] = {}
        for X, y in self.batches:
            for i, tag in enumerate(X[:, 0].astype(int)):
                out.setdefault(int(tag), set()).add(None if y is None else int(y[i]))
        return out


def rows(tags) -> np.ndarray:
    return np.column_stack([np.asarray(tags, np.float32), np.zeros(len(tags), np.float32)])


def cfg(**kw) -> OnlineLearnerConfig:
    base = {"label_delay_s": 7 * DAY, "update_every_events": 1, "steps_per_update": 20, "batch_size": 50}
    return OnlineLearnerConfig(**{**base, **kw})


def test_supervised_learning_waits_for_the_label_delay_and_unlabelled_means_genuine():
    det = Recorder()
    ol = OnlineLearner(det, cfg())
    ol.observe(rows([1, 2, 3]), event_ids=["a", "b", "c"], ts=np.array([0.0, 10.0, 3 * DAY]))
    ol.observe_labels(["a"], [1])
    assert ol.maybe_update(now_ts=6 * DAY) == 0 and det.batches == []  # nothing is ripe yet
    assert ol.maybe_update(now_ts=7 * DAY + 10) == 20
    assert det.taught() == {1: {1}, 2: {0}}  # b had no label after 7 days: genuine; c is not ripe
    assert ol.pending == 1


def test_labels_say_otherwise_flagged_events_are_learned_by_the_autoencoder_only_when_genuine():
    det = Recorder()
    ol = OnlineLearner(det, cfg(supervised=False))
    flags = np.array([False, True, True, False])
    ol.observe(rows([1, 2, 3, 4]), flags, event_ids=["a", "b", "c", "d"], ts=np.zeros(4))
    ol.observe_labels(["c", "d"], [1, 1])  # d was judged normal but turns out to be a fraud
    ol.maybe_update(now_ts=1.0)
    assert set(det.taught()) == {1, 4}  # normal-by-threshold rows are learned at once (d: label came too late)
    det.batches.clear()
    ol.observe(rows([5]), np.array([False]), event_ids=["e"], ts=np.array([8 * DAY]))
    ol.maybe_update(now_ts=8 * DAY)
    assert 2 in det.taught() and 3 not in det.taught()  # b: no fraud label -> normal; c: a fraud, never
    assert all(y is None for X, y in det.batches)  # unsupervised: no labels passed


def test_a_known_fraud_label_keeps_a_normal_looking_event_out_of_the_autoencoder():
    det = Recorder()
    ol = OnlineLearner(det, cfg(supervised=False))
    ol.observe(rows([1, 2]), np.array([False, False]), np.array([1, -1]), event_ids=["a", "b"], ts=np.zeros(2))
    ol.maybe_update(now_ts=8 * DAY)
    assert set(det.taught()) == {2}


def test_cadence_counts_events_between_updates():
    det = Recorder()
    ol = OnlineLearner(det, cfg(label_delay_s=0.0, update_every_events=100, steps_per_update=2))
    steps = []
    for i in range(10):
        ol.observe(rows(np.arange(30) + 30 * i), ts=np.full(30, float(i)))
        steps.append(ol.maybe_update())
    assert steps == [0, 0, 0, 2, 0, 0, 2, 0, 0, 2]
    assert ol.updates == 3


def test_wall_clock_cadence_updates_even_when_few_events_arrive():
    det = Recorder()
    ol = OnlineLearner(det, cfg(label_delay_s=0.0, update_every_events=10_000, update_every_ms=0.0,
                                steps_per_update=1))
    ol.observe(rows([1]), ts=np.array([0.0]))
    assert ol.maybe_update() == 1


def test_balanced_replay_puts_frauds_in_every_minibatch():
    det = Recorder()
    ol = OnlineLearner(det, cfg(label_delay_s=0.0, positive_fraction=0.25, batch_size=40, steps_per_update=5))
    tags = np.arange(1000)
    ol.observe(rows(tags), labels=(tags < 5).astype(int), ts=np.zeros(1000))
    ol.maybe_update(now_ts=1.0)
    for _, y in det.batches:
        assert y.sum() >= 10 and len(y) == 40


def test_replay_keeps_only_the_most_recent_events():
    det = Recorder()
    ol = OnlineLearner(det, cfg(label_delay_s=0.0, replay_capacity=100, steps_per_update=30, batch_size=100))
    ol.observe(rows(np.arange(500)), ts=np.zeros(500))
    ol.maybe_update(now_ts=1.0)
    assert min(det.taught()) >= 400


def test_drift_boost_raises_the_learning_rate_then_decays_back():
    det = Recorder()
    ol = OnlineLearner(det, cfg(label_delay_s=0.0, lr_boost_factor=4.0, lr_boost_events=200, steps_per_update=1,
                                batch_size=50))
    ol.observe(rows(np.arange(10)), ts=np.zeros(10))
    ol.maybe_update()
    assert det.lr == pytest.approx(0.01)
    ol.boost_lr()
    lrs = []
    for i in range(6):
        ol.observe(rows([i]), ts=np.zeros(1))
        ol.maybe_update()
        lrs.append(det.lr)
    assert lrs[0] == pytest.approx(0.04)
    assert all(a > b for a, b in zip(lrs[:4], lrs[1:4], strict=False)) and lrs[-1] == pytest.approx(0.01)


def test_state_round_trip_continues_identically():
    def make():
        det = MLPClassifier(["a", "b"], MLPClassifierConfig(hidden=(8,), seed=0))
        return det, OnlineLearner(det, cfg(label_delay_s=5.0, steps_per_update=3, batch_size=16, seed=1))

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)).astype(np.float32)
    ids = [str(i) for i in range(200)]
    ts = np.arange(200, dtype=np.float64)
    det_a, a = make()
    a.observe(X[:100], event_ids=ids[:100], ts=ts[:100])
    a.observe_labels(["3", "150"], [1, 1])
    a.maybe_update()
    buf = io.BytesIO()
    torch.save({"learner": a.state_dict(), "model": det_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    det_b, b = make()
    det_b.load_state_dict(saved["model"])
    b.load_state_dict(saved["learner"])
    for ol in (a, b):
        ol.observe(X[100:], event_ids=ids[100:], ts=ts[100:])
        ol.maybe_update()
    np.testing.assert_array_equal(det_a.score_many(X), det_b.score_many(X))
    assert b.pending == a.pending


def test_config_is_checked():
    with pytest.raises(ModelError):
        OnlineLearnerConfig(positive_fraction=1.0)
    with pytest.raises(ModelError):
        OnlineLearnerConfig(update_every_events=0)


def _weights(det: MLPClassifier) -> list[torch.Tensor]:
    return [p.detach().clone() for p in det.net.parameters()]


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X[:, 0] > 1.0).astype(np.int64)


def _learner(background: bool, process: bool = True) -> OnlineLearner:
    det = MLPClassifier(["a", "b", "c"], MLPClassifierConfig(hidden=(8,), seed=3))
    return OnlineLearner(det, OnlineLearnerConfig(label_delay_s=0.0, update_every_events=16, steps_per_update=3,
                                                  batch_size=8, background=background, process=process))


def _feed(learner: OnlineLearner, X: np.ndarray, y: np.ndarray, start: int) -> None:
    ids = [str(start + i) for i in range(len(X))]
    learner.observe_labels(ids, y)
    learner.observe(X, event_ids=ids, ts=np.arange(start, start + len(X), dtype=np.float64))
    learner.maybe_update()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_background_learning_runs_beside_the_scoring_thread_and_scores_one_update_behind(process: bool):
    import threading

    X, y = _stream(64, 1)
    background, inline = _learner(True, process), _learner(False)
    assert background.mode == ("process" if process else "thread")
    threads: set[str] = set()
    if not process:
        shadow_learn = background._shadow.learn_many
        background._shadow.learn_many = lambda *a: (threads.add(threading.current_thread().name), shadow_learn(*a))[1]
    background.detector.learn_many = lambda *a: pytest.fail("the scoring detector learned")
    history = []
    for k in range(4):  # four updates of 16 events
        part = slice(16 * k, 16 * (k + 1))
        _feed(inline, X[part], y[part], 16 * k)
        history.append(_weights(inline.detector))
        _feed(background, X[part], y[part], 16 * k)
        served = _weights(background.detector)
        expected = history[k - 1] if k >= 1 else _weights(_learner(False).detector)  # untrained at first
        assert all(torch.equal(a, b) for a, b in zip(served, expected, strict=True)), f"update {k}"
    assert threads == (set() if process else {"streamwarden-learner_0"})


def _assert_restored_state_continues_identically(seed: int, restore_in_process: bool, process: bool = True,
                                                 edit_state=lambda state: None) -> None:
    """Three updates, a checkpoint round trip of detector and learner (the learner's state passed through
    `edit_state`), then three more updates: the original and the restored learner must score the same."""
    from stream_models import checkpoint

    X, y = _stream(96, seed)
    original = _learner(True, process)
    for k in range(3):
        _feed(original, X[16 * k:16 * (k + 1)], y[16 * k:16 * (k + 1)], 16 * k)
    saved = checkpoint.to_bytes({"detector": original.detector.state_dict(), "learner": original.state_dict()})
    detector_state, learner_state = checkpoint.from_bytes(saved).values()
    edit_state(learner_state)
    restored = _learner(True, restore_in_process)
    restored.detector.load_state_dict(detector_state)
    restored.load_state_dict(learner_state)
    for k in range(3, 6):
        for learner in (original, restored):
            _feed(learner, X[16 * k:16 * (k + 1)], y[16 * k:16 * (k + 1)], 16 * k)
        np.testing.assert_array_equal(original.detector.score_many(X), restored.detector.score_many(X))


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_a_background_learner_state_holds_the_copy_and_restores_to_the_same_future(process: bool):
    # a state moves between a learning thread and the learning process
    _assert_restored_state_continues_identically(2, restore_in_process=not process, process=process)


def test_a_state_saved_before_snapshots_were_kept_restores_to_the_same_future():
    """Checkpoints written before `unpublished` existed held the copy one update ahead of the scoring detector."""
    _assert_restored_state_continues_identically(4, restore_in_process=True,
                                                 edit_state=lambda state: state.pop("unpublished"))


def test_resync_starts_the_copy_from_the_scoring_detector_and_drops_the_older_snapshot():
    X, y = _stream(48, 5)
    learner = _learner(True)
    _feed(learner, X[:16], y[:16], 0)  # update 0: its snapshot waits to be published at update 1
    fitted = _weights(learner.detector)
    learner.resync()
    _feed(learner, X[16:32], y[16:32], 16)  # update 1 publishes nothing from before the resync
    assert all(torch.equal(a, b) for a, b in zip(_weights(learner.detector), fitted, strict=True))


def test_a_failing_learning_copy_raises_in_the_scoring_thread():
    learner = _learner(True)
    learner.observe_labels(["1"], [1])
    learner.observe(np.zeros((16, 2), np.float32), event_ids=[str(i) for i in range(16)], ts=np.zeros(16))
    learner.maybe_update(now_ts=1.0)  # 2 features for a 3-feature model: the copy's step fails in the process
    with pytest.raises(ModelError, match="expected 3 features"):
        learner.wait()


def test_a_detector_pickle_cannot_send_learns_in_the_thread():
    class LocalMLP(MLPClassifier):  # a local class: pickle cannot find it by name
        pass

    learner = OnlineLearner(LocalMLP(["a", "b", "c"], MLPClassifierConfig(hidden=(8,), seed=3)),
                            OnlineLearnerConfig(background=True))
    assert learner.mode == "thread"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="the learning process is Linux-only")
def test_a_worker_killed_with_sigkill_leaves_no_learning_process_behind():
    script = textwrap.dedent("""
        import time
        from stream_models.learner import OnlineLearner, OnlineLearnerConfig
        from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig
        learner = OnlineLearner(MLPClassifier(["a"], MLPClassifierConfig(hidden=(4,))), OnlineLearnerConfig(background=True))
        print(learner.mode, flush=True)
        time.sleep(120)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "process"
        children = {int(pid) for task in Path(f"/proc/{worker.pid}/task").iterdir()
                    for pid in (task / "children").read_text().split()}
        assert len(children) == 1, children
    finally:
        worker.kill()
        worker.wait()
    (learning,) = children

    def running() -> bool:  # an exited orphan may linger as a zombie until its new parent reaps it
        try:
            return Path(f"/proc/{learning}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(), "the learning process outlived its worker"
