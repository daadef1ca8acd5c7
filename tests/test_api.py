"""modelguard/api.py: the defended prediction API (victim -> quantizer -> defense)."""
from __future__ import annotations

import pytest
import torch

from modelguard.api import BudgetExceeded, DefendedAPI
from modelguard.defense.am import AdaptiveMisinformation
from modelguard.defense.none import NoDefense
from modelguard.defense.top1 import Top1
from modelguard.quantize.modelguard_s import ModelGuardS
from tests.helpers import pool, tiny_api, tiny_model


def test_answers_are_softmax_rows_and_every_image_counts():
    api = tiny_api(budget=None)
    released, clean = api.query(pool(10), return_clean=True)
    assert torch.equal(released, clean) and torch.allclose(clean.sum(1), torch.ones(10))
    api.query(pool(5))
    assert api.queries == 15 and api.remaining is None


def test_budget_is_never_exceeded():
    api = tiny_api(budget=12)
    api.query(pool(8))
    assert api.remaining == 4
    with pytest.raises(BudgetExceeded, match="budget of 12"):
        api.query(pool(5))
    assert api.queries == 8  # a refused query costs nothing


def test_query_all_is_batched_in_order():
    x = pool(37)
    released, clean = tiny_api(defense=Top1()).query_all(x, batch_size=8)
    one_shot = tiny_api(defense=Top1()).query(x, return_clean=True)
    assert torch.equal(released, one_shot[0].float()) and torch.equal(clean, one_shot[1].float())
    assert released.dtype == torch.float32 and released.device.type == "cpu"


def test_simulate_is_the_offline_form():
    api = tiny_api(defense=Top1())
    released, clean = api.query(pool(6), return_clean=True)
    assert torch.equal(api.simulate(clean), released)
    assert api.top1_preserve


def test_side_information_only_for_defenses_that_take_it():
    assert tiny_api().side_information(pool(4)) is None
    am = DefendedAPI(tiny_model(), AdaptiveMisinformation(misinformation_model=tiny_model(seed=1)))
    info = am.side_information(pool(700), batch_size=256)
    assert info.shape == (700, 4) and torch.allclose(info.sum(1), torch.ones(700))


def test_quantizer_cannot_wrap_a_defense_with_side_information():
    with pytest.raises(ValueError, match="quantize=ModelGuardS cannot wrap AdaptiveMisinformation"):
        DefendedAPI(tiny_model(), AdaptiveMisinformation(), ModelGuardS())
    assert DefendedAPI(tiny_model(), NoDefense(), ModelGuardS()).quantizer is not None
