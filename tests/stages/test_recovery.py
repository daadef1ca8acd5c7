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
