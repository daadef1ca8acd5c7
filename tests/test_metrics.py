"""modelguard/metrics.py: distances, distortion, accuracy, fidelity."""
from __future__ import annotations

import math

import torch

from modelguard.metrics import accuracy, agreement, distortion, row_kl, row_l1, row_l2


def test_row_distances():
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    b = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert row_l1(a, b).tolist() == [2.0, 0.0]
    assert torch.allclose(row_l2(a, b), torch.tensor([math.sqrt(2), 0.0]))


def test_kl_takes_zero_log_zero_as_zero():
    released = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    clean = torch.tensor([[1.0, 0.0], [0.25, 0.75]], dtype=torch.float64)
    kl = row_kl(released, clean)
    assert abs(kl[0]) < 1e-5
    expected = 0.5 * math.log(0.5 / (0.25 + 1e-6)) + 0.5 * math.log(0.5 / (0.75 + 1e-6))
    assert abs(kl[1] - expected) < 1e-12


def test_distortion_summary():
    clean = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    stats = distortion(clean, clean.clone())
    assert stats == {"l1_mean": 0.0, "l1_max": 0.0, "l2_mean": 0.0, "kl_mean": stats["kl_mean"]}
    assert abs(stats["kl_mean"]) < 1e-5
    moved = distortion(clean, torch.tensor([[0.1, 0.9], [0.2, 0.8]]))
    assert abs(moved["l1_max"] - 1.6) < 1e-6 and abs(moved["l1_mean"] - 0.8) < 1e-6


def test_accuracy_and_agreement():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(probs, torch.tensor([0, 1, 1])) == 2 / 3
    assert agreement(probs, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])) == 2 / 3
