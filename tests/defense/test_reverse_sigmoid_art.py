"""Reverse Sigmoid against the peer library ART (spec §2; ART's formula in shared/notes/environment.md).

ART clips p to [1e-9, 1 − 1e-9] inside the sigmoid and clips p − r to [0, 1] before
normalising. For β < 1 and p away from 0 and 1 neither clip is active, so both must agree
to round-off."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelguard.defense.base import release_dtype
from modelguard.defense.reverse_sigmoid import ReverseSigmoid
from tests.realistic_rows import pipeline_params


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


@pytest.mark.parametrize("beta,gamma", [(0.21, 0.2), (0.008, 0.2), (0.5, 1.5), (0.3, 2.5)])
@pytest.mark.parametrize("K,family", pipeline_params(10, 256))
def test_agrees_with_art_on_pipeline_rows(beta, gamma, K, family, pipeline_rows):
    # the rows a victim really hands over (float32 LeNet softmax, float16/bfloat16, edge
    # rows), restricted to those where ART's clips are inactive (every p in [1e-9, 1 − 1e-9]);
    # ART sees the float64 values of the rows, ours come back in release_dtype
    postprocessor = pytest.importorskip("art.defences.postprocessor")
    probs = pipeline_rows(K, family)
    y = probs.double()
    inside = (y.amin(1) >= 1e-9) & (y.amax(1) <= 1 - 1e-9)
    assert int(inside.sum()) >= 2  # every family has rows away from 0 and 1
    probs, y = probs[inside], y[inside]
    ours = ReverseSigmoid(beta=beta, gamma=gamma).perturb(probs)
    assert ours.dtype == release_dtype(probs.dtype)
    theirs = postprocessor.ReverseSigmoid(beta=beta, gamma=gamma)(y.numpy())
    ulp = torch.finfo(ours.dtype).eps
    np.testing.assert_allclose(ours.double().numpy(), theirs, rtol=2 * ulp, atol=1e-12)
