"""Query policies and attack knobs on tiny synthetic data."""
from __future__ import annotations

import pytest
import torch

from modelguard.api import BudgetExceeded, DefendedAPI
from modelguard.arch.small import mlp
from modelguard.attack.augment import random_view
from modelguard.policy.jbda import JacobianAugmentation
from modelguard.policy.knockoff import KnockoffRandom
from modelguard.attack.strategy import AttackStrategy
from modelguard.defense.none import NoDefense
from modelguard.defense.top1 import Top1
from modelguard.attack.s4l import rotation_loss


def tiny_api(budget=None, defense=None, k=4):
    torch.manual_seed(0)
    victim = mlp(k, 1, 8, [0.5], [0.25], hidden=16)
    return DefendedAPI(victim, defense or NoDefense(), budget=budget)


def pool(n=64):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_knockoff_queries_a_seeded_permutation_within_budget():
    api = tiny_api(budget=40)
    log = KnockoffRandom().collect(api, pool(), AttackStrategy(budget=40, query_batch_size=7),
                                   torch.Generator().manual_seed(3), progress=False)
    assert api.queries == 40 and len(log.released) == 40
    assert len(set(log.pool_index.tolist())) == 40
    again = KnockoffRandom().collect(tiny_api(budget=40), pool(), AttackStrategy(budget=40, query_batch_size=5),
                                     torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(log.pool_index, again.pool_index)
    assert torch.allclose(log.released, again.released)  # batch size does not change answers


def test_api_refuses_to_exceed_budget():
    api = tiny_api(budget=5)
    with pytest.raises(BudgetExceeded, match="attack.budget"):
        api.query(pool(6))


def test_smoothing_averages_three_augmented_passes():
    api = tiny_api(budget=60, defense=Top1())
    attack = AttackStrategy(budget=20, queries_per_image=3, augment_queries=True, augment="shift")
    log = KnockoffRandom().collect(api, pool(), attack, torch.Generator().manual_seed(0), progress=False)
    assert api.queries == 60
    assert torch.allclose(log.released.sum(1), torch.ones(20))
    # averages of three one-hot answers take values in {0, 1/3, 2/3, 1}
    assert torch.allclose(log.released * 3, (log.released * 3).round(), atol=1e-5)


def test_random_view_shifts_within_padding_and_keeps_range():
    x = pool(10)
    v = random_view(x, torch.Generator().manual_seed(0), padding=2)
    assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
    assert not torch.equal(v, x)
    assert torch.equal(random_view(x, torch.Generator().manual_seed(0), padding=0), x)


def test_rotation_loss_trains_the_rotation_head():
    model = mlp(4, 1, 8, [0.5], [0.25], hidden=16)
    model.rotation_head = torch.nn.Linear(model.feature_dim, 4)
    loss = rotation_loss(model, pool(8))
    loss.backward()
    assert torch.isfinite(loss) and model.rotation_head.weight.grad.abs().sum() > 0


def test_jbda_spends_exactly_the_budget_and_stays_in_pixel_range():
    api = tiny_api(budget=100)
    trained = []

    def train(inputs, labels, tag):
        trained.append(len(inputs))
        torch.manual_seed(0)
        return mlp(4, 1, 8, [0.5], [0.25], hidden=16), {"surrogate/test_acc": 0.0}

    policy = JacobianAugmentation(seed_size=10, variants=3, step_eps=0.1, steps=2)
    log = policy.collect(api, pool(), AttackStrategy(budget=100, query_batch_size=8),
                         torch.Generator().manual_seed(0), train_substitute=train,
                         relabel=lambda a, l: (l.released, {}), progress=False)
    assert api.queries == 100 and len(log.inputs) == 100
    assert trained == [10, 40]  # seeds, then seeds + 3 variants each; the last round is truncated
    assert (log.pool_index[:10] >= 0).all() and (log.pool_index[10:] == -1).all()
    assert log.inputs.min() >= 0 and log.inputs.max() <= 1


def test_jbda_synthesis_stays_within_step_eps():
    policy = JacobianAugmentation(seed_size=1, variants=1, step_eps=0.05, steps=4,
                                  compat={"eps_units": "pixel", "clip_space": "pixel"})
    x = pool(6)
    model = mlp(4, 1, 8, [0.5], [0.25], hidden=16)
    out = policy.synthesise(model, x, 4, torch.Generator().manual_seed(0))
    assert (out - x).abs().max() <= 0.05 + 1e-6
    assert not torch.equal(out, x)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"budget": 0}, "attack.budget=0"),
    ({"table_source": "dirichlet"}, "attack.table_source='dirichlet'"),
    ({"rotation_weight": -1}, "attack.rotation_weight=-1"),
])
def test_strategy_validation_names_the_knob(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        AttackStrategy(**kwargs)
