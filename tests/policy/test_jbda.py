"""JBDA-TR (spec attacks §8.2) on a tiny victim: budget, synthesis bounds, and what it counts."""
from __future__ import annotations

import torch

from modelguard.arch.small import mlp
from modelguard.attack.strategy import AttackStrategy
from modelguard.policy.jbda import JacobianAugmentation
from modelguard.policy.knockoff import KnockoffRandom
from tests.helpers import pool, tiny_api


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


def test_budget_counts_images_and_each_policy_its_queries():
    """attack.budget counts images (docs/decisions.md): KnockoffNets pays queries_per_image
    queries for each, JBDA-TR queries every image once."""
    attack = AttackStrategy(budget=30, queries_per_image=3)
    assert KnockoffRandom().max_queries(attack) == 90
    assert JacobianAugmentation().max_queries(attack) == 30
    api = tiny_api(budget=JacobianAugmentation().max_queries(attack))
    train = lambda inputs, labels, tag: (mlp(4, 1, 8, [0.5], [0.25], hidden=16), {"surrogate/test_acc": 0.0})
    log = JacobianAugmentation(seed_size=10, steps=1).collect(
        api, pool(), attack, torch.Generator().manual_seed(0), progress=False, train_substitute=train,
        relabel=lambda a, l: (l.released, {}))
    assert api.queries == len(log.inputs) == 30
