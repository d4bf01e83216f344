"""GPU runs give the CPU's scores within float tolerance (skipped on machines without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_models import catalog
from stream_models.checks import sample_data

GPU = "cuda"
TORCH_DETECTORS = [name for name in catalog.names() if name != "halfspace_trees"]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _make(name: str, device: str):
    params = dict(getattr(catalog.factory(name), "check_params", {}))
    return catalog.make(name, n_features=4, seed=0, device=device, **params)


@pytest.mark.parametrize("name", TORCH_DETECTORS)
def test_gpu_scores_and_updates_follow_the_cpu(name: str) -> None:
    cpu = _make(name, "cpu")
    X, y = sample_data(cpu, n=256)
    cpu.learn_many(X, y)

    gpu = _make(name, GPU)
    gpu.load_state_dict(cpu.state_dict())
    np.testing.assert_allclose(gpu.score_many(X), cpu.score_many(X), rtol=1e-4, atol=1e-5)

    # one more online update on each device keeps them together
    cpu.learn_many(X, y)
    gpu.learn_many(X, y)
    np.testing.assert_allclose(gpu.score_many(X), cpu.score_many(X), rtol=1e-3, atol=1e-4)
