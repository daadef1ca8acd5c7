"""Metric helpers. Metric names use "/" namespaces (victim/test_acc, surrogate/fidelity)."""
from __future__ import annotations

import torch


def row_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row L1 distance between two [B, K] batches."""
    return (a - b).abs().sum(dim=1)


def row_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum(dim=1).sqrt()


def row_kl(released: torch.Tensor, clean: torch.Tensor, smoothing: float = 1e-6) -> torch.Tensor:
    """KL(released || clean + smoothing) per row, with 0 log 0 = 0 (spec defenses §1.3)."""
    released = released.clamp_min(0)
    log_ratio = torch.log(released.clamp_min(1e-30)) - torch.log(clean + smoothing)
    return torch.where(released > 0, released * log_ratio, torch.zeros_like(released)).sum(dim=1)


def distortion(clean: torch.Tensor, released: torch.Tensor) -> dict[str, float]:
    """Summary of how far released vectors are from clean ones (per-sample L1, L2, KL)."""
    clean = clean.double()
    released = released.double()
    l1 = row_l1(clean, released)
    l2 = row_l2(clean, released)
    kl = row_kl(released, clean)
    return {
        "l1_mean": l1.mean().item(),
        "l1_max": l1.max().item(),
        "l2_mean": l2.mean().item(),
        "kl_mean": kl.mean().item(),
    }


def accuracy(probs_or_logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs_or_logits.argmax(dim=1) == labels).double().mean().item()


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows whose top-1 classes agree (fidelity)."""
    return (a.argmax(dim=1) == b.argmax(dim=1)).double().mean().item()
