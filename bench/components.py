"""Developer timings of single components, in-process (not product figures: those come from the CLI).

  sensor_windows  SensorWindows.update_many on 2,000 readings of 50 devices x 8 channels whose statistics are frozen
                  (the sensors default: window 30, freeze after 400, drift horizon 800), after 30,000 warm-up readings
  mlp_step        one MLPClassifier.learn_many step: batch 256, 40 features, the shipped MLP (hidden 500, dropout 0.2)

Each is the best of 5 repeats, with torch's threads set as the worker sets them (the shipped `runner.torch_threads`,
through `set_torch_threads`). Compare commits back to back:

    .venv/bin/python -m bench.components
    PYTHONPATH=/path/to/worktree-of-older-commit .venv/bin/python bench/components.py
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch


def best_of(fn, calls: int, repeats: int = 5) -> float:
    """Seconds per call: the best mean over `repeats` runs of `calls` calls."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def sensor_windows() -> float:
    from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

    rng = np.random.default_rng(0)
    channels = [f"c{i}" for i in range(8)]
    events = [SimpleNamespace(event_id=str(i), ts=float(i), device_id=f"d{i % 50}",
                              readings={c: float(rng.normal()) for c in channels}) for i in range(32_000)]
    windows = SensorWindows(SensorWindowsConfig(window=30, freeze_after=400, drift_horizon=800.0))
    for i in range(0, 30_000, 2_000):
        windows.update_many(events[i : i + 2_000])
    batch = events[30_000:]
    state = windows.snapshot()

    def one() -> None:
        windows.restore(state)
        windows.update_many(batch)

    return best_of(one, 20)


def mlp_step() -> float:
    from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig

    rng = np.random.default_rng(0)
    det = MLPClassifier([f"f{i}" for i in range(40)], MLPClassifierConfig(seed=0))
    X = rng.standard_normal((256, 40)).astype(np.float32)
    y = (rng.random(256) < 0.1).astype(np.float32)
    for _ in range(50):
        det.learn_many(X, y)
    return best_of(lambda: det.learn_many(X, y), 200)


def main() -> None:
    from pipeline.settings import Settings
    from stream_models.device import set_torch_threads

    set_torch_threads(Settings().runner.torch_threads)  # what the worker does with the shipped settings
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"sensor_windows: {sensor_windows() * 1e3:.2f} ms per 2,000 readings")
    print(f"mlp_step: {mlp_step() * 1e3:.3f} ms per step")


if __name__ == "__main__":
    main()
