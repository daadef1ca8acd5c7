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
        calls.append({"model": make_model(), "pool": pool, **kwargs})
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


def test_shadow_test_split_is_its_classes_relabelled():
    from torch.utils.data import TensorDataset
    from modelguard.recover.shadows import ShadowTask, shadow_test_set
    images = torch.arange(8.0).view(8, 1, 1, 1)
    test_pool = TensorDataset(images, torch.tensor([0, 3, 1, 3, 2, 1, 0, 4]))
    task = ShadowTask(index=torch.arange(2), labels=torch.zeros(2, dtype=torch.long), classes=torch.tensor([3, 1]))
    split = shadow_test_set(task, test_pool)
    assert split.tensors[0].flatten().tolist() == [1.0, 2.0, 3.0, 5.0]  # the images of classes 3 and 1
    assert split.tensors[1].tolist() == [0, 1, 0, 1]  # class 3 is label 0, class 1 label 1


def test_shadows_keep_the_last_epoch_reaching_the_best_test_accuracy(monkeypatch):
    """A controlled run: each epoch sets the shadow's weights to the epoch number, and the test
    accuracies are scripted; the weights kept are those of the last epoch reaching the best
    (ties: the later, spec attacks §3), and without a test split, the last epoch's."""
    from torch.utils.data import TensorDataset
    from modelguard.recover import shadows

    def fake_fit(model, data, *, epochs, evaluate=None, **kwargs):
        history = []
        for epoch in range(1, epochs + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float(epoch))
            history.append({"epoch": epoch, **(evaluate() if evaluate is not None else {})})
        return history

    accs = iter([0.2, 0.5, 0.4, 0.5, 0.3])
    monkeypatch.setattr(shadows, "fit", fake_fit)
    monkeypatch.setattr(shadows, "test_accuracy", lambda model, test_set, device, loader: next(accs))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    pool = TensorDataset(torch.rand(6, 1, 2, 2), labels)
    tasks = shadows.plan_shadows(labels, k=2, count=1, seed=0, split="all")
    selections = []
    (model,) = shadows.train_shadows(tasks, pool, lambda: torch.nn.Linear(4, 2), epochs=5, batch_size=2,
                                     optimizer=None, scheduler=None, seed=0, progress=False, test_pool=pool,
                                     selections=selections)
    assert torch.all(model.weight == 4.0)  # epoch 4 ties epoch 2's 0.5 and comes later
    assert selections == [{"selected_epoch": 4, "test_acc": 0.5, "test_size": 4}]
    selections = []
    (last,) = shadows.train_shadows(tasks, pool, lambda: torch.nn.Linear(4, 2), epochs=5, batch_size=2,
                                    optimizer=None, scheduler=None, seed=0, progress=False, selections=selections)
    assert torch.all(last.weight == 5.0) and selections == [{"selected_epoch": 5, "test_acc": None, "test_size": 0}]


def test_shadows_on_disk_train_on_the_augmented_pool_and_select_on_its_test_split(compose_cfg, tmp_path,
                                                                                  monkeypatch):
    """Data on disk (CIFAR-10 with its TinyImageNet pool): the shadows train on pool_augmented
    (the pool's train transform) and select on pool_test; the cache records the selection."""
    import json
    from tests.test_paper import cifar_tree
    calls = _spy_shadow_training(monkeypatch)
    cfg = compose_cfg("dataset=cifar10", f"paths.data_dir={cifar_tree(tmp_path / 'data')}", "arch=mlp",
                      "arch.hidden=8", "attack=ddae", "attack.table_source.count=2", "substitute.shadow_epochs=2",
                      "progress=false")
    data = load_data(cfg)
    source = instantiate(cfg.attack).table_source
    models = shadow_models(cfg, data, source)
    assert len(models) == 2
    (call,) = calls
    assert call["pool"] is data.pool_augmented and call["test_pool"] is data.pool_test
    assert call["pool"].transform is not data.query_pool.transform  # the train transform, not the test one
    from modelguard.stages import recovery
    assert recovery.SHADOW_SCHEME == 4
    done = json.loads((shadow_dir(cfg, source) / "done.json").read_text())
    assert done["scheme"] == 4 and all(1 <= e <= 2 for e in done["selected_epochs"])
    assert done["test_sizes"] == [20, 20]  # K = 10 of the pool's 10 classes: all 20 test images
    assert all(0.0 <= a <= 1.0 for a in done["test_accs"])
