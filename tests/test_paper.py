"""The paper's grid as presets (issue 10 item 4): experiment=paper/<dataset> holds the per-dataset
values of experiment-grid.md §1; values that belong to one defense or attack (conf/per_defense/,
conf/per_attack/) apply only with that option; every preset composes with every defense and
attack; launchers/paper_table.sh lists the grid with its skip rules (§3: 78 jobs per dataset); and
the presets run end to end on fixture trees (main.py, as the issue's Done-when states it)."""
from __future__ import annotations

import collections
import inspect
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from main import recorded_choices
from tests.dataset import fake_trees

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PRESETS = ("cifar10", "cifar100", "cub200", "caltech256")
DEFENSES = sorted(p.stem for p in (CONF / "defense").glob("*.yaml"))
ATTACKS = sorted(p.stem for p in (CONF / "attack").glob("*.yaml"))

# experiment-grid.md §1, one row per dataset.
GRID = {
    "cifar10": dict(victim="CIFAR10", pool="TinyImageNet200", outliers="SVHN", arch="vgg16_bn", k=10, size=32,
                    lr=0.1, batch=128, beta=0.21, tau=0.7),
    "cifar100": dict(victim="CIFAR100", pool="TinyImageNet200", outliers="SVHN", arch="vgg16_bn", k=100, size=32,
                     lr=0.1, batch=128, beta=0.02, tau=0.4),
    "cub200": dict(victim="CUB200", pool="ImageNet1k", outliers="Indoor67", arch="resnet50", k=200, size=224,
                   lr=0.01, batch=32, beta=0.011, tau=0.3),
    "caltech256": dict(victim="Caltech256", pool="ImageNet1k", outliers="Indoor67", arch="resnet50", k=256, size=224,
                       lr=0.01, batch=32, beta=0.008, tau=0.25),
}


def compose_all(*override_lists: list[str]) -> list[DictConfig]:
    """Compose many configs under one Hydra initialisation (one compose costs ~0.1-0.3 s)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            return [compose("main", ["paths.data_dir=/nowhere", *o]) for o in override_lists]
    finally:
        GlobalHydra.instance().clear()


def instantiate_all(cfg: DictConfig) -> list[str]:
    """Build every object the config names, as run.validate does for the groups and deeper: the
    top-most node of each ``_target_`` anywhere (victim.optimizer, substitute.shadow_arch, ...);
    classes are constructed, factories (archs, optimizers) resolved. Returns the paths built."""
    built = []

    def walk(node, path: str) -> None:
        if isinstance(node, DictConfig):
            if "_target_" in node:
                factory = not inspect.isclass(get_object(node._target_))
                instantiate(node, _partial_=factory or bool(node.get("_partial_", False)))
                built.append(path)
                return
            for key in node:
                walk(node[key], f"{path}.{key}" if path else str(key))

    for key in cfg:
        if key not in ("hydra", "paths", "run_keys", "wandb") and not OmegaConf.is_missing(cfg, key):
            walk(cfg[key], str(key))
    return built


# --------------------------------------------------------------------------- the presets' values

@pytest.mark.parametrize("name", PRESETS)
def test_preset_holds_the_grid_row(name):
    row = GRID[name]
    cfg, rs, am, mad, ddae = compose_all(*[[f"experiment=paper/{name}", *o] for o in (
        [], ["defense=reverse_sigmoid"], ["defense=am"], ["defense=mad"], ["attack=ddae"])])
    data = cfg.dataset
    assert [data[r]._target_.rsplit(".", 1)[1] for r in ("victim", "pool", "outliers")] == \
        [row["victim"], row["pool"], row["outliers"]]
    assert cfg.arch._target_ == f"modelguard.arch.paper.{row['arch']}" and cfg.arch.pretrained == "imagenet"
    victim, sub = cfg.victim, cfg.substitute
    assert (victim.epochs, victim.batch_size, victim.optimizer.lr, victim.optimizer.momentum) == (100, 64, 0.01, 0.5)
    assert (victim.scheduler.step_size, victim.scheduler.gamma, victim.oe_lambda, victim.misinformation) == \
        (30, 0.5, 1.0, True)
    assert (sub.epochs, sub.optimizer.lr, sub.batch_size, sub.optimizer.momentum, sub.optimizer.weight_decay) == \
        (30, row["lr"], row["batch"], 0.5, 0.0)
    assert (sub.scheduler.step_size, sub.scheduler.gamma) == (10, 0.5)
    assert cfg.policy._target_.endswith("KnockoffRandom")
    assert (cfg.attack.budget, cfg.attack.query_batch_size) == (50_000, 32)
    assert cfg.attack.table_rows_per_query * cfg.attack.budget == 1_000_000  # the paper's recovery table
    # D-DAE: 20 AlexNet shadows with ImageNet weights, 5 epochs, batch 64, SGD 0.01, StepLR 3/0.5
    assert ddae.attack.table_source.count == 20
    assert sub.shadow_arch._target_ == "modelguard.arch.paper.alexnet" and sub.shadow_arch.pretrained == "imagenet"
    recipe = sub.shadow_recipe
    assert (sub.shadow_epochs, recipe.batch_size, recipe.optimizer.lr, recipe.optimizer.momentum,
            recipe.optimizer.weight_decay, recipe.scheduler.step_size, recipe.scheduler.gamma) == \
        (5, 64, 0.01, 0.5, 5e-4, 3, 0.5)
    assert (rs.defense.beta, rs.defense.gamma, am.defense.tau) == (row["beta"], 0.2, row["tau"])
    assert mad.attack.query_batch_size == 1 and (mad.defense.eps, mad.defense.oracle) == (1.0, "argmax")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_archs_build_at_the_datasets_size(name):
    """The victim/substitute arch and the shadows' at the dataset's K and image size (random weights:
    pretrained=imagenet reads torch's cache, which tests/arch/test_pretrained.py covers)."""
    row = GRID[name]
    (cfg,) = compose_all([f"experiment=paper/{name}"])
    shape = dict(num_classes=row["k"], in_channels=3, image_size=row["size"], mean=[0.5] * 3, std=[0.25] * 3)
    for node in (cfg.arch, cfg.substitute.shadow_arch):
        model = instantiate(OmegaConf.merge(node, {"pretrained": None}), **shape).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, row["size"], row["size"])).shape == (1, row["k"])


def test_defense_and_attack_values_apply_only_with_their_option():
    base, rs, mld, rs_plain, mad_plain, rs_cli, mad_cli, ddae_plain, ddae_cli = compose_all(
        ["experiment=paper/cifar100"], ["experiment=paper/cifar100", "defense=reverse_sigmoid"],
        ["experiment=paper/cifar100", "defense=mld"], ["defense=reverse_sigmoid"], ["defense=mad"],
        ["experiment=paper/cifar100", "defense=reverse_sigmoid", "defense.beta=0.3"],
        ["experiment=paper/cifar100", "defense=mad", "attack.query_batch_size=4"],
        ["attack=ddae"], ["experiment=paper/cifar100", "attack=ddae", "attack.table_source.count=3"])
    assert rs.defense.beta == 0.02 and "beta" not in mld.defense and "tau" not in mld.defense
    assert base.attack.query_batch_size == 32 and base.attack.table_source is None
    assert rs_plain.defense.beta == 0.21 and mad_plain.attack.query_batch_size == 32  # no preset, no paper values
    assert ddae_plain.attack.table_source.count == 5
    assert rs_cli.defense.beta == 0.3 and mad_cli.attack.query_batch_size == 4  # the command line still wins
    assert ddae_cli.attack.table_source.count == 3
    assert base.substitute.shadow_arch is not None and compose_all([])[0].substitute.shadow_arch is None


def test_derived_groups_are_not_recorded_as_choices():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("main", ["experiment=paper/cifar100", "defense=reverse_sigmoid", "attack=ddae"],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    choices = cfg.hydra.runtime.choices
    assert choices.per_defense == "paper/cifar100/reverse_sigmoid" and choices.per_attack == "paper/cifar100/ddae"
    recorded = recorded_choices(choices)
    assert "per_defense" not in recorded and "per_attack" not in recorded
    assert recorded["experiment"] == "paper/cifar100" and recorded["defense"] == "reverse_sigmoid"
    assert not any(k.startswith("hydra") for k in recorded)


def _cross(presets, defenses, attacks, policies=("knockoff",)) -> list[list[str]]:
    return [[f"experiment=paper/{p}", f"defense={d}", f"attack={a}", f"policy={q}"]
            for p in presets for d in defenses for a in attacks for q in policies]


def _check_composes(overrides: list[list[str]]) -> None:
    for o, cfg in zip(overrides, compose_all(*overrides)):
        built = instantiate_all(cfg)
        assert {"dataset", "arch", "defense", "quantize", "recover", "policy", "attack", "victim.optimizer",
                "substitute.shadow_arch", "substitute.shadow_recipe.optimizer"} <= set(built), (o, built)


def test_every_preset_composes_with_every_defense_and_every_attack():
    """Every defense and every attack option with every preset, all objects built: per_defense files
    depend only on (preset, defense) and per_attack files on (preset, attack), so these two sweeps
    reach every file (JBDA-TR: the launcher's commands below); the full product is the slow test."""
    _check_composes(_cross(PRESETS, DEFENSES, ["ddae"]) + _cross(PRESETS, ["mad"], ATTACKS))


@pytest.mark.slow
def test_full_product_of_presets_defenses_attacks_policies_composes():
    _check_composes(_cross(PRESETS, DEFENSES, ATTACKS, ("knockoff", "jbtr3")))


# --------------------------------------------------------------------------- the launcher

# experiment-grid.md §3, the validity matrix: which defenses and policies each attack runs with
# ("modelguard_s": no defense behind quantize=modelguard_s).
EVERY = ("none", "reverse_sigmoid", "mad", "am", "top1", "rounding", "mld", "modelguard_s")
BOTH, KNOCKOFF = ("knockoff", "jbtr3"), ("knockoff",)
MATRIX = {"naive": (EVERY, BOTH), "top1": (("reverse_sigmoid", "am"), BOTH), "s4l": (EVERY, KNOCKOFF),
          "smoothing": (EVERY, KNOCKOFF), "ddae": (EVERY[1:], BOTH), "ddae_plus": (EVERY[1:], BOTH),
          "bayes": (EVERY[1:], BOTH)}


def dry_run(dataset: str, *extra: str, **env: str) -> str:
    proc = subprocess.run(["bash", "launchers/paper_table.sh", dataset, *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DRY_RUN": "1", **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def commands(listing: str) -> list[list[str]]:
    """The main.py arguments of every printed command."""
    out = []
    for line in listing.splitlines():
        if not line.startswith("#"):
            words = shlex.split(line)
            assert words[1:3] == ["main.py", "-m"], line
            out.append(words[3:])
    return out


def jobs_of(args: list[str]) -> list[list[str]]:
    """The jobs one multirun command makes, expanded by Hydra's own basic sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def cell(job: list[str]) -> tuple[str, str, str]:
    kv = dict(o.split("=", 1) for o in job)
    defense = "modelguard_s" if kv.get("quantize") == "modelguard_s" else kv["defense"]
    assert defense != "modelguard_s" or kv["defense"] == "none"
    return kv["policy"], kv["attack"], defense


@pytest.mark.parametrize("dataset", PRESETS)
def test_launcher_dry_run_lists_the_grid_with_its_skip_rules(dataset):
    listing = dry_run(dataset)
    assert "# jobs: knockoff 47, jbtr3 31, total 78 per seed; 78 with 1 seed(s)" in listing
    victims, *grid = commands(listing)
    assert "stages=[victim]" in victims and f"experiment=paper/{dataset}" in victims  # victims first
    cells = [cell(job) for args in grid for job in jobs_of(args)]
    expected = {(q, a, d) for a, (defenses, policies) in MATRIX.items() for d in defenses for q in policies}
    assert len(cells) == len(set(cells)) == 78 and set(cells) == expected
    counts = collections.Counter(q for q, _, _ in cells)
    assert (counts["knockoff"], counts["jbtr3"]) == (47, 31)
    assert all(f"experiment=paper/{dataset}" in args and "seed=0" in args for args in grid)


def test_launcher_options_seeds_qpi2_and_extra_overrides():
    listing = dry_run("cub200", "device=cuda", "loader.num_workers=8", SEEDS="0 1", QPI2="1")
    assert "# jobs: knockoff 55, jbtr3 31, total 86 per seed; 172 with 2 seed(s)" in listing
    cmds = commands(listing)
    assert all(args[-2:] == ["device=cuda", "loader.num_workers=8"] for args in cmds)
    qpi2 = {cell(job) for args in cmds[1:] for job in jobs_of(args) if "attack=qpi2" in job}
    assert qpi2 == {("knockoff", "qpi2", d) for d in EVERY}
    assert sum(len(jobs_of(args)) for args in cmds[1:]) == 172
    proc = subprocess.run(["bash", "launchers/paper_table.sh", "mnist"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "one of cifar10 cifar100 cub200 caltech256" in proc.stderr


def _compose_jobs(args_list: list[list[str]]) -> None:
    # hydra.* overrides (sweep dir, callbacks) configure the launcher, not the job.
    jobs = [[o for o in job if not o.lstrip("+").startswith("hydra.")] for job in args_list]
    for job, cfg in zip(jobs, compose_all(*jobs)):
        assert instantiate_all(cfg), job


def test_every_printed_command_composes():
    """One job of every command the cifar10 dry run prints (the victims' too), composed and built;
    the slow test composes every job of every dataset."""
    _compose_jobs([jobs_of(args)[0] for args in commands(dry_run("cifar10"))])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", PRESETS)
def test_every_printed_job_composes(dataset):
    _compose_jobs([job for args in commands(dry_run(dataset)) for job in jobs_of(args)])


# --------------------------------------------------------------------------- end to end on CPU

def torch_cache(home: Path) -> Path:
    """A torch cache holding the files pretrained=imagenet reads for the CIFAR presets: the
    convolutions (and VGG's batch norms) in torchvision's key layout, at their initial values."""
    from torchvision.models.vgg import cfgs, make_layers
    from modelguard.arch.paper import cifar_alexnet_features
    from modelguard.arch.pretrained import TORCHVISION_FILES
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for arch, features in (("vgg16_bn", make_layers(cfgs["D"], batch_norm=True)), ("alexnet", cifar_alexnet_features())):
        torch.save(torch.nn.Sequential(collections.OrderedDict(features=features)).state_dict(),
                   folder / TORCHVISION_FILES[arch])
    return home


def main_py(tmp_path: Path, *overrides: str, torch_home: Path | None = None) -> dict:
    """``python main.py <overrides>`` in a subprocess, as the issue's Done-when types it; its metrics."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "TORCH_HOME": str(torch_home or tmp_path / "empty-torch-cache")}
    proc = subprocess.run([sys.executable, "main.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def cifar_tree(root: Path) -> Path:
    """CIFAR-10 / TinyImageNet200 / SVHN fixtures: 10 pool classes (D-DAE's shadows take K = 10 of
    them) and 70 pool images, enough for debug=fast's budget of 64."""
    fake_trees.cifar_binary(root, 10, per_file=4, test=10)
    fake_trees.tinyimagenet200(root, wnids=tuple(f"n0{i:07d}" for i in range(10)), per_class=7)
    fake_trees.svhn(root)
    return root


def test_cifar10_preset_runs_end_to_end_on_cpu(tmp_path):
    """python main.py experiment=paper/cifar10 paths.data_dir=<fixture tree> debug=fast (about 15 s),
    with the preset's ImageNet-initialised VGG-16-BN read from a torch cache."""
    data = cifar_tree(tmp_path / "data")
    record = main_py(tmp_path, "experiment=paper/cifar10", f"paths.data_dir={data}", "debug=fast",
                     torch_home=torch_cache(tmp_path / "torch"))
    assert record["choice/experiment"] == "paper/cifar10" and record["arch.pretrained"] == "imagenet"
    assert record["queries"] == 64 and record["attack.query_batch_size"] == 32
    assert 0.0 <= record["surrogate/best_test_acc"] <= 1.0 and "victim/test_acc" in record
    assert not any(k.startswith(("choice/per_defense", "choice/per_attack")) for k in record)


def test_loader_workers_do_not_change_a_run_on_disk_data(tmp_path):
    """The CIFAR-10 preset on the fixture tree, where the victim trains under random crops and
    flips and smoothing queries per-image augmented views: 0 and 2 loader workers give the same
    metrics and a byte-identical victim (per-item seeds, dataset/loading.py)."""
    data = cifar_tree(tmp_path / "data")
    records, victims = [], []
    for workers in (0, 2):
        run = tmp_path / f"workers{workers}"
        records.append(_metrics(main_py(run, "experiment=paper/cifar10", f"paths.data_dir={data}", "debug=fast",
                                        "arch.pretrained=null", "attack=smoothing", f"loader.num_workers={workers}")))
        (victim,) = (run / "cache").glob("victims/**/victim.pt")
        victims.append(victim.read_bytes())
    assert records[0] == records[1]
    assert victims[0] == victims[1]
    assert records[0]["attack.queries_per_image"] == 3 and "loader.num_workers" not in records[0]


def _metrics(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("time/") and not k.endswith("_build_s")
            and k != "victim/trained_here"}


@pytest.mark.slow
def test_cifar10_preset_ddae_against_mad_end_to_end(tmp_path):
    """The paper's costliest cell on the fixture: 20 AlexNet shadows (ImageNet-initialised, the
    shadows' recipe), MAD answering one image per query, the 20-rows-per-query table (~20 s)."""
    data = cifar_tree(tmp_path / "data")
    record = main_py(tmp_path, "experiment=paper/cifar10", f"paths.data_dir={data}", "debug=fast",
                     "attack=ddae", "defense=mad", torch_home=torch_cache(tmp_path / "torch"))
    assert record["attack.table_source.count"] == 20 and record["attack.query_batch_size"] == 1
    assert record["recover/table_rows"] == 20 * 64 and record["substitute.shadow_recipe.batch_size"] == 64
    shadows = sorted((tmp_path / "cache" / "shadows").glob("seed=0/*/shadow_*.pt"))
    assert len(shadows) == 20
    assert any(k.startswith("backbone.features.10.") for k in torch.load(shadows[0], weights_only=True))  # AlexNet


@pytest.mark.slow
def test_launcher_runs_a_part_of_the_grid_and_reports(tmp_path):
    """launchers/paper_table.sh for real on the CIFAR-10 fixture (ATTACKS=top1: 2 KnockoffNets + 2
    JBDA-TR jobs, about a minute): victims, the multiruns, the report."""
    data = cifar_tree(tmp_path / "data")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "ATTACKS": "top1", "SWEEP_DIR": str(sweep), "PYTHON": sys.executable,
           "MODELGUARD_CACHE": str(tmp_path / "cache"), "TORCH_HOME": str(torch_cache(tmp_path / "torch")),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "launchers/paper_table.sh", "cifar10", f"paths.data_dir={data}", "debug=fast"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import csv
    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["choice/policy"], r["choice/defense"], r["status"]) for r in rows} == {
        (q, d, "ok") for q in BOTH for d in ("reverse_sigmoid", "am")} and len(rows) == 4
    assert {r["defense.tau"] for r in rows if r["choice/defense"] == "am"} == {"0.7"}
    assert (sweep / "results.md").exists() and (sweep / ".launcher" / "commands.txt").exists()
    # the paper's table: 8 defense rows, the two top1 columns, '–' where the skip rule left a cell out
    assert f"{sweep}/paper_table.md" in proc.stdout
    table = [line for line in (sweep / "paper_table.md").read_text().splitlines() if line.startswith("| ")]
    assert table[0] == "| defense | protected acc | knockoff / top1 | jbtr3 / top1 |"
    assert [line.split(" | ")[0] for line in table[1:3]] == ["| Reverse Sigmoid (reverse_sigmoid)", "| AM (am)"]
    assert len(table) == 2 * 3  # substitute accuracy, then fidelity


@pytest.mark.slow
def test_cub200_preset_runs_end_to_end_at_224px(tmp_path):
    """A 224 px preset (ResNet-50) end to end with arch.pretrained=null, as the Done-when asks."""
    root = tmp_path / "data"
    fake_trees.cub200(root, counts={"001.a": 4, "002.b": 4})
    fake_trees.imagenet1k(root, counts={"n01440764": 30, "n01443537": 30, "n01484850": 30})  # 72 train (80%)
    fake_trees.indoor67(root)
    record = main_py(tmp_path, "experiment=paper/cub200", f"paths.data_dir={root}", "debug=fast",
                     "arch.pretrained=null")
    assert record["queries"] == 64 and record["substitute.batch_size"] == 32
    assert 0.0 <= record["surrogate/best_test_acc"] <= 1.0
