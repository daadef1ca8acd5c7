"""stages/defended.py: defenses get exactly the side models their constructors name."""
from __future__ import annotations

import pytest
import torch

from modelguard.defense.am import AdaptiveMisinformation
from modelguard.defense.mad import MAD
from modelguard.stages import victim
from modelguard.stages.common import load_data, victim_dir
from modelguard.stages.defended import build_api, build_defense


@pytest.mark.parametrize("option, attribute", [("mad", "proxy"), ("am", "misinformation_model")])
def test_side_model_is_a_constructor_argument(smoke, option, attribute):
    cfg = smoke(f"defense={option}")
    victim.run(cfg)
    defense = build_defense(cfg, load_data(cfg))
    assert isinstance(getattr(defense, attribute), torch.nn.Module)
    assert not hasattr(defense, "set_" + attribute)  # no setter: the constructor is the only way in
    api = build_api(cfg, load_data(cfg))
    x = load_data(cfg).victim_test.tensors[0][:8]
    assert api.side_information(x).shape == (8, 4)


def test_defenses_without_side_models_get_none(smoke):
    cfg = smoke("defense=reverse_sigmoid")
    victim.run(cfg)
    build_defense(cfg, load_data(cfg))
    assert not (victim_dir(cfg) / "mad_proxy").exists()  # not asked for, never built


def test_the_side_model_names_match_the_constructors():
    import inspect
    assert "proxy" in inspect.signature(MAD).parameters
    assert "misinformation_model" in inspect.signature(AdaptiveMisinformation).parameters
