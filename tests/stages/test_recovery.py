"""stages/recovery.py and the table sources it drives (recover/sources.py, recover/shadows.py):
the source is an object named by attack.table_source, given only the runtime inputs it names."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from modelguard.attack.strategy import AttackStrategy
from modelguard.recover.sources import DirichletPrior, ShadowModels
from modelguard.run import run_experiment
from modelguard.stages import victim
from modelguard.stages.common import load_data
from modelguard.stages.recovery import shadow_dir, shadow_models


@pytest.mark.parametrize("option, cls", [("bayes", DirichletPrior), ("ddae_plus", DirichletPrior),
                                         ("ddae", ShadowModels), ("naive", type(None))])
def test_attack_options_name_their_table_source(compose_cfg, option, cls):
    assert isinstance(instantiate(compose_cfg(f"attack={option}").attack).table_source, cls)


def test_dirichlet_rows_stand_for_their_queries():
    clean = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), 1)
    rows, index = DirichletPrior(8.0).clean_rows(20, torch.Generator().manual_seed(1), clean=clean)
    assert rows.shape == (20, 4) and torch.equal(index, torch.arange(5).repeat_interleave(4))
    again, _ = DirichletPrior(8.0).clean_rows(20, torch.Generator().manual_seed(1), clean=clean)
    assert torch.equal(rows, again)


@pytest.mark.parametrize("make, fragment", [
    (lambda: DirichletPrior(0.0), "attack.table_source.concentration_factor=0.0"),
    (lambda: ShadowModels(count=0), "attack.table_source.count=0"),
    (lambda: ShadowModels(split="half"), "attack.table_source.split='half'"),
    (lambda: AttackStrategy(table_source="shadows"), "attack.table_source='shadows'"),
])
def test_table_source_knobs_are_validated(make, fragment):
    with pytest.raises(ValueError, match=fragment):
        make()


def test_shadow_models_are_cached_and_keyed_by_their_knobs(smoke):
    cfg = smoke("attack=ddae", "attack.table_source.count=2", "substitute.shadow_epochs=1")
    victim.run(cfg)
    source = instantiate(cfg.attack).table_source
    models = shadow_models(cfg, load_data(cfg), source)
    assert len(models) == 2 and (shadow_dir(cfg, source) / "done.json").exists()
    x = load_data(cfg).query_pool.tensors[0][:6]
    rows, index = source.clean_rows(8, torch.Generator().manual_seed(0), inputs=x, shadow_models=models)
    assert rows.shape == (8, 4) and set(index.tolist()) <= set(range(6))  # 12 rows, a seeded 8 kept
    assert shadow_dir(cfg, ShadowModels(2, "all")) != shadow_dir(cfg, source)


def test_quantizer_eps_filters_the_table(smoke, tmp_path):
    record = run_experiment(smoke("attack=bayes", "defense=none", "quantize=modelguard_s", "quantize.eps=0.05",
                                  "attack.table_rows_per_query=4", output_dir=tmp_path / "q"))
    assert record["recover/table_rows"] < 4 * record["queries"]  # pairs beyond eps dropped


def _spy_shadow_training(monkeypatch) -> list[dict]:
    """Record what shadow_models hands train_shadows, and train as usual."""
    from modelguard.stages import recovery
    calls, real = [], recovery.train_shadows

    def spy(tasks, pool, make_model, **kwargs):
        calls.append({"model": make_model(), **kwargs})
        return real(tasks, pool, make_model, **kwargs)

    monkeypatch.setattr(recovery, "train_shadows", spy)
    return calls


def test_shadows_take_their_own_arch_and_recipe(smoke, monkeypatch):
    """substitute.shadow_arch and substitute.shadow_recipe (the paper's AlexNet shadows with their
    own recipe) reach the shadows and their cache key; the victim and substitute keep cfg.arch."""
    from omegaconf import open_dict
    calls = _spy_shadow_training(monkeypatch)
    cfg = smoke("attack=ddae", "attack.table_source.count=2", "substitute.shadow_epochs=1",
                "+arch@substitute.shadow_arch=mlp", "substitute.shadow_arch.hidden=7")
    with open_dict(cfg):
        cfg.substitute.shadow_recipe = {"batch_size": 5, "scheduler": None, "optimizer": {
            "_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.125}}
    victim.run(cfg)
    source = instantiate(cfg.attack).table_source
    models = shadow_models(cfg, load_data(cfg), source)
    assert [m.head.in_features for m in models] == [7, 7] and cfg.arch.hidden == 64  # the shadows' arch only
    (call,) = calls
    assert call["batch_size"] == 5 and call["scheduler"] is None and call["epochs"] == 1
    assert call["optimizer"](call["model"].parameters()).param_groups[0]["lr"] == 0.125
    default = smoke("attack=ddae", "attack.table_source.count=2", "substitute.shadow_epochs=1")
    assert shadow_dir(default, source) != shadow_dir(cfg, source)


def test_null_shadow_arch_and_recipe_are_the_runs(smoke, monkeypatch):
    calls = _spy_shadow_training(monkeypatch)
    cfg = smoke("attack=ddae", "attack.table_source.count=1", "substitute.shadow_epochs=1")
    assert cfg.substitute.shadow_arch is None and cfg.substitute.shadow_recipe is None
    victim.run(cfg)
    (model,) = shadow_models(cfg, load_data(cfg), instantiate(cfg.attack).table_source)
    assert model.head.in_features == cfg.arch.hidden
    assert calls[0]["batch_size"] == cfg.substitute.batch_size
    lr = calls[0]["optimizer"](model.parameters()).param_groups[0]["lr"]
    assert lr == cfg.substitute.optimizer.lr


def test_an_incomplete_shadow_recipe_is_named(smoke):
    from omegaconf import open_dict
    from modelguard.stages.recovery import shadow_recipe
    cfg = smoke("attack=ddae")
    with open_dict(cfg):
        cfg.substitute.shadow_recipe = {"batch_size": 64}
    with pytest.raises(ValueError, match="substitute.shadow_recipe lacks optimizer, scheduler"):
        shadow_recipe(cfg)
