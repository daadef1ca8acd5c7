"""modelguard/utils/seed.py: named generator streams."""
from __future__ import annotations

import torch

from modelguard.utils.seed import make_generator, seed_torch, stream_seed


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
