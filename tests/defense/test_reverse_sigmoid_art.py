"""Reverse Sigmoid against the peer library ART (spec §2; ART's formula in shared/notes/environment.md).

ART clips p to [1e-9, 1 − 1e-9] inside the sigmoid and clips p − r to [0, 1] before
normalising. For β < 1 and p away from 0 and 1 neither clip is active, so both must agree
to round-off."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelguard.defense.reverse_sigmoid import ReverseSigmoid


@pytest.mark.parametrize("beta,gamma", [(0.008, 0.2), (0.011, 0.2), (0.02, 0.2), (0.21, 0.2), (0.5, 1.0), (0.3, 2.5)])
@pytest.mark.parametrize("k", [2, 10, 100])
def test_agrees_with_art(beta, gamma, k):
    postprocessor = pytest.importorskip("art.defences.postprocessor")
    g = torch.Generator().manual_seed(k)
    probs = torch.softmax(2.0 * torch.randn(64, k, generator=g, dtype=torch.float64), dim=1)
    probs = probs.clamp(1e-6, 1 - 1e-6)
    probs = probs / probs.sum(1, keepdim=True)
    ours = ReverseSigmoid(beta=beta, gamma=gamma).perturb(probs).numpy()
    theirs = postprocessor.ReverseSigmoid(beta=beta, gamma=gamma)(probs.numpy())
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # float32 in, float32 out, same numbers to float32 precision
    ours32 = ReverseSigmoid(beta=beta, gamma=gamma).perturb(probs.float())
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.numpy(), theirs, rtol=0, atol=1e-6)
