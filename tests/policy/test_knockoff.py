"""KnockoffNets' random policy (spec attacks §8.1) on a tiny victim."""
from __future__ import annotations

import torch

from modelguard.attack.strategy import AttackStrategy
from modelguard.dataset.transforms import ShiftView
from modelguard.defense.top1 import Top1
from modelguard.policy.knockoff import KnockoffRandom
from tests.helpers import pool, tiny_api


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


def test_smoothing_averages_three_augmented_passes():
    api = tiny_api(budget=60, defense=Top1())
    attack = AttackStrategy(budget=20, queries_per_image=3, augment_queries=True, augment=ShiftView())
    log = KnockoffRandom().collect(api, pool(), attack, torch.Generator().manual_seed(0), progress=False)
    assert api.queries == 60
    assert torch.allclose(log.released.sum(1), torch.ones(20))
    # averages of three one-hot answers take values in {0, 1/3, 2/3, 1}
    assert torch.allclose(log.released * 3, (log.released * 3).round(), atol=1e-5)
