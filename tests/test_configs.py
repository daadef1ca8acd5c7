"""Every option of every group composes and instantiates; targets stay inside our allowlist."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from modelguard.stages.common import build_model, load_data

CONF = Path(__file__).resolve().parents[1] / "conf"
INSTANTIABLE = ["dataset", "defense", "quantize", "recover", "policy"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def all_targets(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                found.append(v)
            all_targets(v, found)
    elif isinstance(node, list):
        for v in node:
            all_targets(v, found)
    return found


@pytest.mark.parametrize("group", INSTANTIABLE)
def test_every_option_instantiates(compose_cfg, group):
    names = options(group)
    assert names, f"conf/{group} has no options"
    for name in names:
        cfg = compose_cfg(f"{group}={name}")
        obj = instantiate(cfg[group])
        assert obj is not None, f"{group}={name}"


def test_every_attack_composes_and_instantiates(compose_cfg):
    for name in options("attack"):
        cfg = compose_cfg(f"attack={name}")
        strategy = instantiate(cfg.attack)
        assert strategy.budget >= 1
        assert OmegaConf.select(cfg, "recover._target_") is not None


# The paper's CIFAR-family nets bring 32 px to a 1x1 feature map: 28 px MNIST is too small for them.
NEEDS_32PX = {"alexnet", "vgg16_bn"}


def test_every_arch_builds_for_the_default_data(compose_cfg):
    from hydra.errors import InstantiationException
    data = load_data(compose_cfg("experiment=smoke"))
    for name in options("arch"):
        cfg = compose_cfg(f"arch={name}", "dataset=mnist")
        if name in NEEDS_32PX:
            with pytest.raises(InstantiationException, match=f"arch={name} .*takes .* px images, got image_size=28"):
                build_model(cfg, load_data(cfg))
            cfg = compose_cfg(f"arch={name}", "dataset=synthetic", "dataset.image_size=32", "dataset.in_channels=3",
                              "dataset.num_classes=10")
        model = build_model(cfg, load_data(cfg))
        assert model.head.out_features == 10, name
    assert data.num_classes == 4


@pytest.mark.parametrize("group", ["experiment", "debug", "cluster", "victim", "substitute"])
def test_presets_compose(compose_cfg, group):
    for name in options(group):
        cfg = compose_cfg(f"{group}={name}")
        assert cfg.stages


def test_targets_are_allowlisted(compose_cfg):
    for group in INSTANTIABLE + ["arch", "attack", "victim", "substitute"]:
        for name in options(group):
            cfg = OmegaConf.to_container(compose_cfg(f"{group}={name}"), resolve=False)
            cfg.pop("hydra", None)
            for target in all_targets(cfg):
                assert target.startswith(("modelguard.", "torch.", "torchvision.")), (group, name, target)


def test_unknown_option_is_named(compose_cfg):
    from hydra.errors import MissingConfigException
    with pytest.raises(MissingConfigException) as err:
        compose_cfg("defense=nonexistent")
    assert "nonexistent" in str(err.value)


@pytest.mark.parametrize("option", ["none", "top1", "rounding", "reverse_sigmoid", "random_noise", "mld"])
def test_defense_is_a_library_object(compose_cfg, option):
    """instantiate(cfg.defense).perturb(probs) works outside the pipeline for probability-only defenses."""
    import torch
    overrides = [f"defense={option}"] + (["defense.eps=0.5"] if option == "mld" else [])
    defense = instantiate(compose_cfg(*overrides).defense)
    probs = torch.softmax(3 * torch.randn(16, 10, generator=torch.Generator().manual_seed(0)), 1)
    released = defense.perturb(probs)
    assert released.shape == probs.shape and torch.isfinite(released).all()
    if option == "mld":
        assert ((released - probs).abs().sum(1) <= 0.5 + 1e-6).all()
        assert torch.equal(released.argmax(1), probs.argmax(1))


def test_original_recipes_preset_is_the_spec_table(compose_cfg):
    """experiment=original_recipes: the original's recipes (spec attacks §11), as a delta."""
    cfg = compose_cfg("experiment=original_recipes")
    victim, sub = cfg.victim, cfg.substitute
    assert victim.optimizer.momentum == 0.5 and sub.optimizer.momentum == 0.5
    assert (victim.epochs, victim.batch_size, victim.optimizer.lr, victim.optimizer.weight_decay) == (100, 64, 0.01, 5e-4)
    assert (victim.scheduler.step_size, victim.scheduler.gamma) == (30, 0.5)
    assert (sub.epochs, sub.optimizer.lr, sub.optimizer.weight_decay) == (30, 0.1, 0.0)
    assert (sub.scheduler.step_size, sub.scheduler.gamma) == (10, 0.5)
    assert victim.select == "best_test" and sub.select == "best_test"
    assert cfg.substitute.shadow_epochs == 5
    shadows = cfg.substitute.shadow_recipe  # the original's shadow training (spec attacks §11)
    assert (shadows.batch_size, shadows.optimizer.lr, shadows.optimizer.momentum, shadows.optimizer.weight_decay,
            shadows.scheduler.step_size, shadows.scheduler.gamma) == (64, 0.01, 0.5, 5e-4, 3, 0.5)
    assert cfg.dataset._target_.endswith("EmbeddedMNIST")  # a delta: the rest stays the default
    default = compose_cfg()
    assert default.victim.select == "last" and default.substitute.select == "last"  # the fast recipe stays
    assert (default.victim.epochs, default.substitute.epochs) == (20, 10)
    fast = compose_cfg("experiment=original_recipes", "debug=fast")
    assert (fast.victim.epochs, fast.substitute.epochs, fast.attack.budget) == (2, 2, 64)
    assert fast.victim.optimizer.momentum == 0.5


def test_original_recipes_preset_runs(compose_cfg, tmp_path):
    from modelguard.run import run_experiment
    record = run_experiment(compose_cfg("experiment=original_recipes", "debug=fast", "dataset=synthetic", "arch=mlp",
                                        "attack.budget=200", "defense=none"))
    assert 1 <= record["victim/selected_epoch"] <= 2 and 1 <= record["surrogate/selected_epoch"] <= 2
    assert record["queries"] == 200


def test_nested_knobs_are_recorded(compose_cfg):
    """Sweeps over nested knobs (policy.compat.*, victim.optimizer.*) stay tellable apart in the report."""
    from modelguard.run import swept_scalars
    flat = swept_scalars(compose_cfg("policy=jbtr3", "policy.compat.clip_space=pixel", "experiment=original_recipes"))
    assert flat["policy.compat.clip_space"] == "pixel" and flat["policy.compat.eps_from_defense"] is True
    assert flat["victim.optimizer.momentum"] == 0.5 and flat["substitute.select"] == "best_test"
    assert not any(k.split(".")[-1].startswith("_") for k in flat) and "dataset.seed" not in flat


def test_run_knobs_follow_the_run(compose_cfg):
    """seed, device and progress are set once at the top; a group that takes one interpolates it
    (${seed}, ${device}, ${progress}), so a seed sweep or device=cuda reaches every component."""
    groups = ["dataset", "arch", "victim", "defense", "quantize", "recover", "policy", "attack", "substitute"]
    seen = []
    for group in groups:
        for name in options(group):
            raw = OmegaConf.to_container(compose_cfg(f"{group}={name}"), resolve=False)

            def walk(node, where):
                if isinstance(node, dict):
                    for k, v in node.items():
                        if k in ("seed", "device", "progress") and where:
                            seen.append((where, k))
                            assert v == f"${{{k}}}", (group, name, where, k, v)
                        walk(v, f"{where}.{k}" if where else k)

            walk({g: raw[g] for g in groups}, "")
    assert {("recover", "seed"), ("recover", "device"), ("quantize", "seed")} <= set(seen)


def test_run_keys_are_the_one_list(compose_cfg):
    """conf/main.yaml run_keys: the directory name and the done-marker hash read the same list."""
    from modelguard.stages.common import job_config_hash
    cfg = compose_cfg()
    hydra_cfg = OmegaConf.load(CONF / "hydra" / "default.yaml")
    assert hydra_cfg.job.config.override_dirname._get_node("exclude_keys")._value() == "${oc.dict.keys:run_keys}"
    assert {k for k, kind in cfg.run_keys.items() if kind == "path"} == {"attack", "defense", "seed"}
    ignored = {k for k, kind in cfg.run_keys.items() if kind == "ignored"}
    for override in ("threads=4", "device=auto", "fresh=true", "progress=false", "run_name=r", "sweep_name=s",
                     "stages=[victim]", "wandb.mode=offline", "wandb.project=p", "paths.cache_dir=/elsewhere",
                     "loader.num_workers=4"):
        key = override.split("=")[0]
        assert key in ignored or key.split(".")[0] in ignored, key
        assert job_config_hash(compose_cfg(override)) == job_config_hash(cfg), override
    for override in ("attack.budget=5", "seed=1", "defense=top1", "substitute.shadow_epochs=2"):
        assert job_config_hash(compose_cfg(override)) != job_config_hash(cfg), override


def test_every_leaf_of_an_ignored_node_stays_out_of_the_dir_name(compose_cfg):
    """Hydra's override_dirname compares overrides as typed (paths.cache_dir=...), so a node key
    (paths) does not cover its leaves there: each leaf is listed (a bad cache path once landed in
    the run-directory name, issue 11)."""
    cfg = compose_cfg()
    ignored = {k for k, kind in cfg.run_keys.items() if kind == "ignored"}
    for key in ignored:
        node = OmegaConf.select(cfg, key)
        if isinstance(node, DictConfig):
            # _target_ names the class (loader: LoaderSettings), not a knob anyone overrides
            leaves = {f"{key}.{leaf}" for leaf in node.keys() if leaf != "_target_"}
            assert leaves <= ignored, (key, leaves - ignored)


def _defaults(cls) -> dict:
    import inspect
    return {n: p.default for n, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("option, node", [("attack/naive", "attack"), ("attack/bayes", "attack.table_source"),
                                          ("attack/ddae_plus", "attack.table_source"),
                                          ("attack/ddae", "attack.table_source"), ("policy/jbtr3", None),
                                          ("policy/knockoff", None)])
def test_base_options_list_the_class_defaults(option, node):
    """The knobs a YAML lists (so that each can be overridden from the command line and is
    recorded in metrics.json) are the class's own defaults: the YAML never silently differs
    from the class, and the derived options (attack=top1, s4l, ...) state only their deltas."""
    from hydra.utils import get_class
    raw = OmegaConf.to_container(OmegaConf.load(CONF / f"{option}.yaml"))
    for part in (node or "").split(".") if node else []:
        raw = raw[part]
    defaults = _defaults(get_class(raw["_target_"]))
    listed = {k: v for k, v in raw.items() if not k.startswith("_")}
    assert listed.keys() <= defaults.keys(), option
    compat = listed.pop("compat", None)
    assert listed == {k: defaults[k] for k in listed}, option
    if compat is not None:
        from modelguard.policy.jbda import COMPAT_DEFAULTS
        assert compat == COMPAT_DEFAULTS
    if option == "attack/naive":  # every AttackStrategy knob is listed
        assert listed.keys() == defaults.keys()


def test_derived_attack_options_state_only_deltas():
    base = OmegaConf.to_container(OmegaConf.load(CONF / "attack" / "naive.yaml"))["attack"]
    for option in options("attack"):
        if option == "naive":
            continue
        node = OmegaConf.to_container(OmegaConf.load(CONF / "attack" / f"{option}.yaml")).get("attack", {})
        same = [k for k, v in node.items() if k in base and base[k] == v]
        assert not same, (option, same)
