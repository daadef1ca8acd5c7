"""The attacker's knobs (AttackStrategy), query views, the S4L loss and the API's budget."""
from __future__ import annotations

import pytest
import torch

from modelguard.api import BudgetExceeded
from modelguard.arch.small import mlp
from modelguard.dataset.transforms import ShiftView
from modelguard.attack.s4l import rotation_loss
from modelguard.attack.strategy import AttackStrategy
from tests.helpers import pool, tiny_api


def test_api_refuses_to_exceed_budget():
    api = tiny_api(budget=5)
    with pytest.raises(BudgetExceeded, match="attack.budget"):
        api.query(pool(6))


def test_random_view_shifts_within_padding_and_keeps_range():
    x = pool(10)
    v = ShiftView(padding=2)(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
    assert not torch.equal(v, x)
    assert torch.equal(ShiftView(padding=0)(x, torch.Generator().manual_seed(0)), x)


def test_rotation_loss_trains_the_rotation_head():
    model = mlp(4, 1, 8, [0.5], [0.25], hidden=16)
    model.rotation_head = torch.nn.Linear(model.feature_dim, 4)
    loss = rotation_loss(model, pool(8))
    loss.backward()
    assert torch.isfinite(loss) and model.rotation_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"budget": 0}, "attack.budget=0"),
    ({"table_source": "dirichlet"}, "attack.table_source='dirichlet'"),
    ({"rotation_weight": -1}, "attack.rotation_weight=-1"),
])
def test_strategy_validation_names_the_knob(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        AttackStrategy(**kwargs)
