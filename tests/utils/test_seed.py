"""modelguard/utils/seed.py: named generator streams."""
from __future__ import annotations

import torch

from modelguard.utils.seed import make_generator


def test_streams_are_reproducible_and_independent():
    a = torch.rand(5, generator=make_generator(0, "query"))
    assert torch.equal(a, torch.rand(5, generator=make_generator(0, "query")))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(0, "victim-batches")))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(1, "query")))
