"""Adaptive Misinformation (spec §5): the gate, the mixing formula, side information and the training losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modelguard.defense.am import AdaptiveMisinformation, misinformation_loss, outlier_exposure_loss


def _rows(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gate_is_a_steep_sigmoid_around_tau():
    am = AdaptiveMisinformation(tau=0.7)
    y = _rows([0.7, 0.2, 0.1], [0.71, 0.19, 0.1], [0.69, 0.21, 0.1], [1.0, 0.0, 0.0], [0.4, 0.3, 0.3])
    h = am.gate(y)
    expected = torch.tensor(
        [0.5, 1 / (1 + math.exp(10)), 1 / (1 + math.exp(-10)), 1 / (1 + math.exp(300)), 1 / (1 + math.exp(-300))],
        dtype=torch.float64,
    )
    torch.testing.assert_close(h, expected, rtol=1e-12, atol=1e-300)
    assert float(h[3]) < 1e-100 and float(h[4]) == pytest.approx(1.0, abs=1e-100)


def test_mixing_formula_and_broadcast():
    am = AdaptiveMisinformation(tau=0.7)
    y = _rows([0.7, 0.2, 0.1], [0.95, 0.03, 0.02], [0.4, 0.3, 0.3])
    yhat = _rows([0.1, 0.1, 0.8])
    out = am.perturb(y, yhat)  # one xinfo row for every row
    h = am.gate(y)[:, None]
    torch.testing.assert_close(out, (1 - h) * y + h * yhat, rtol=0, atol=1e-15)
    torch.testing.assert_close(out[0], 0.5 * y[0] + 0.5 * yhat[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(out[1], y[1], rtol=0, atol=1e-15)  # confident: passes through
    torch.testing.assert_close(out[2], yhat[0], rtol=0, atol=1e-15)  # unsure: misinformation
    torch.testing.assert_close(am.simulate(y, yhat), out, rtol=0, atol=0)
    assert not am.top1_preserve and am.requires_xinfo


def test_non_adaptive_mixes_with_tau():
    am = AdaptiveMisinformation(tau=0.25, adaptive=False)
    y = _rows([0.9, 0.1], [0.5, 0.5])
    yhat = _rows([0.0, 1.0], [1.0, 0.0])
    torch.testing.assert_close(am.perturb(y, yhat), 0.75 * y + 0.25 * yhat, rtol=0, atol=1e-15)


def test_dtype_and_simplex_float32():
    am = AdaptiveMisinformation(tau=0.4)
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(3 * torch.randn(50, 256, generator=g), 1)
    yhat = torch.softmax(torch.randn(50, 256, generator=g), 1)
    out = am.perturb(y, yhat)
    assert out.dtype == torch.float32
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(50), atol=1e-5)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 5)
        self.bn = torch.nn.BatchNorm1d(5)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.fc(x)))


def test_xinfo_runs_the_model_in_eval_mode_without_grad():
    torch.manual_seed(0)
    model = _Net()
    model.train()
    am = AdaptiveMisinformation(misinformation_model=model)
    x = torch.randn(8, 4)
    running = model.bn.running_mean.clone()
    info = am.xinfo(x)
    assert model.training  # mode restored
    assert torch.equal(model.bn.running_mean, running)  # eval mode: statistics untouched
    assert not info.requires_grad
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(info, torch.softmax(model(x), 1))
    assert am.to("cpu") is am
    assert not hasattr(am, "set_misinformation_model")  # the constructor is the only way in


def test_errors():
    for bad in (-0.1, 1.5, float("nan"), True, "0.7"):
        with pytest.raises(ValueError, match=r"defense.tau=.*set defense.tau=0.7"):
            AdaptiveMisinformation(tau=bad)
    with pytest.raises(ValueError, match=r"defense.adaptive='yes'.*set defense.adaptive=true"):
        AdaptiveMisinformation(adaptive="yes")
    am = AdaptiveMisinformation()
    y = _rows([0.5, 0.5])
    with pytest.raises(ValueError, match="xinfo=defense.xinfo"):
        am.perturb(y)
    with pytest.raises(ValueError, match="shape"):
        am.perturb(y, _rows([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="misinformation_model=model"):
        am.xinfo(torch.zeros(1, 4))
    with pytest.raises(TypeError):
        AdaptiveMisinformation(misinformation_model=object())


def test_misinformation_loss_matches_closed_form_and_pushes_away_from_truth():
    torch.manual_seed(1)
    logits = torch.randn(6, 4, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    p = torch.softmax(logits, 1)
    q = 1 - p + 1e-7
    expected = -torch.log(q[torch.arange(6), targets] / q.sum(1)).mean()
    torch.testing.assert_close(misinformation_loss(logits, targets), expected, rtol=1e-12, atol=0)
    # one gradient step lowers the probability of the true class
    z = logits.clone().requires_grad_(True)
    misinformation_loss(z, targets).backward()
    p_after = torch.softmax(logits - 0.5 * z.grad, 1)
    assert (p_after[torch.arange(6), targets] < p[torch.arange(6), targets]).all()


def test_outlier_exposure_loss_is_cross_entropy_to_uniform():
    torch.manual_seed(2)
    logits = torch.randn(5, 7, dtype=torch.float64)
    uniform = torch.full((5, 7), 1 / 7, dtype=torch.float64)
    torch.testing.assert_close(outlier_exposure_loss(logits), F.cross_entropy(logits, uniform), rtol=1e-12, atol=0)
    expected = (torch.logsumexp(logits, 1) - logits.mean(1)).mean()
    torch.testing.assert_close(outlier_exposure_loss(logits), expected, rtol=1e-12, atol=0)
    # minimal (log K) exactly at constant logits
    assert float(outlier_exposure_loss(torch.zeros(2, 7, dtype=torch.float64))) == pytest.approx(math.log(7))
