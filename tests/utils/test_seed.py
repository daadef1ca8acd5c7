"""modelguard/utils/seed.py: named generator streams."""
from __future__ import annotations

import os

import torch

from modelguard.utils.seed import make_generator, seed_everything, seed_torch, stream_seed


def test_streams_are_reproducible_and_independent():
    a = torch.rand(5, generator=make_generator(0, "query"))
    assert torch.equal(a, torch.rand(5, generator=make_generator(0, "query")))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(0, "victim-batches")))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(1, "query")))


def test_global_rng_from_a_stream():
    seed_torch(3, "victim-init")
    a = torch.rand(4)
    torch.manual_seed(stream_seed(3, "victim-init"))
    assert torch.equal(a, torch.rand(4))
    assert make_generator(3, "victim-init").initial_seed() == stream_seed(3, "victim-init")
    assert stream_seed(3, "victim-init") != stream_seed(3, "substitute-init") != 3


def test_deterministic_mode_is_set_and_cleared_per_run(monkeypatch):
    """deterministic=true: torch's deterministic kernels and cuBLAS's fixed workspace (set before
    CUDA starts); a later run with deterministic=false in the same process does not inherit it."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        seed_everything(0, deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's choice is kept
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
