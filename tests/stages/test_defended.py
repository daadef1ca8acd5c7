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


def test_mad_proxy_never_takes_pretrained_weights(smoke, tmp_path):
    """The original's MAD proxy is a scratch model (spec attacks §5): with arch.pretrained set, the
    victim's architecture gets the weights and the proxy does not (its own seeded initialisation)."""
    from modelguard.stages.common import build_model
    from modelguard.stages.defended import build_proxy
    base = smoke("arch=resnet18", "defense=mad")
    weights = tmp_path / "weights.pt"
    torch.manual_seed(123)
    torch.save(build_model(base, load_data(base)).state_dict(), weights)
    cfg = smoke("arch=resnet18", "defense=mad", f"+arch.pretrained={weights}")
    data = load_data(cfg)
    name = "backbone.layer1.0.conv1.weight"
    reference = torch.load(weights, weights_only=True)[name]
    assert torch.equal(build_model(cfg, data).state_dict()[name], reference)
    proxy = build_proxy(cfg, data)
    assert not torch.equal(proxy.state_dict()[name], reference)
    assert torch.equal(proxy.state_dict()[name], build_proxy(base, data).state_dict()[name])  # as without weights
