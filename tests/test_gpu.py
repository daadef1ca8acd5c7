"""CUDA paths (marked gpu, skipped without CUDA): ModelGuard-W, ModelGuard-S and the recovery table
compute on the GPU and agree with the CPU; a bf16/channels-last victim keeps float32 answers."""
from __future__ import annotations

import pytest
import torch

from modelguard.defense.mld import ModelGuardW
from modelguard.quantize.modelguard_s import ModelGuardS
from modelguard.recover.table import dirichlet_table_clean, simulate_table

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def softmax_rows(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed)), 1)


def test_modelguard_w_on_cuda_matches_cpu():
    y = softmax_rows(512, 256)
    cpu = ModelGuardW(eps=1.0).perturb(y)
    gpu = ModelGuardW(eps=1.0).perturb(y.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)


def test_modelguard_s_on_cuda_matches_cpu():
    y = softmax_rows(600, 10)
    cpu = ModelGuardS(eps=0.5).quantize(y)
    gpu = ModelGuardS(eps=0.5).quantize(y.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)


def test_recovery_table_simulates_on_cuda():
    g = torch.Generator().manual_seed(1)
    clean, _ = dirichlet_table_clean(softmax_rows(64, 10), 2000, 8.0, g)
    defense = ModelGuardW(eps=1.0)
    on_cpu = simulate_table(clean.float(), defense, progress=False)
    on_gpu = simulate_table(clean.float(), defense, progress=False, device="cuda")
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-6)


def test_bf16_channels_last_victim_answers_in_float32():
    from modelguard.arch.small import lenet
    model = lenet(10, 1, 28, [0.5], [0.25]).cuda().speed_up(torch.bfloat16, channels_last=True)
    out = model(torch.rand(16, 1, 28, 28, device="cuda"))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
