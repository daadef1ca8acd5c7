"""Checking a job's config before anything runs.

Classes validate their own knobs in their constructors; this module checks what no class
owns: the run knobs at the top of conf/main.yaml, the victim and substitute recipes (plain
nodes), the device and the shared cache directory. It then builds every configured object
once, so a bad value anywhere stops the run with one message (the knob, the value, what is
allowed, the fix) before a stage trains or overwrites anything."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig

from modelguard.arch.base import check_knobs
from modelguard.engine import check_selection
from modelguard.stages import STAGES
from modelguard.stages.common import plain, science_groups
from modelguard.stages.recovery import missing_shadow_recipe_keys
from modelguard.utils.checks import check_choice, check_flag, check_number, check_training_knobs
from modelguard.utils.device import resolve_device
from modelguard.utils.io import check_writable_dir
from modelguard.utils.tracking import ALLOWED_MODES

# Example values quoted in the fixes of the recipe knobs.
EXAMPLES = {"epochs": 10, "batch_size": 64}


def validate(cfg: DictConfig) -> None:
    """Raise ValueError (or RuntimeError for a device that is absent) for the first bad value."""
    check_run_knobs(cfg)
    check_recipe(cfg.victim, "victim")
    check_number(cfg.victim.oe_lambda, "victim.oe_lambda", low=0,
                 note="the weight of the outlier-exposure loss; 0 turns it off", fix="set victim.oe_lambda=1.0")
    check_flag(cfg.victim.misinformation, "victim.misinformation",
               fix="set victim.misinformation=true (defense=am needs it) or false")
    check_recipe(cfg.substitute, "substitute")
    check_number(cfg.substitute.shadow_epochs, "substitute.shadow_epochs", low=1, integer=True,
                 note="D-DAE's shadow models train for at least one epoch", fix="set substitute.shadow_epochs=3")
    check_shadow_recipe(cfg.substitute.get("shadow_recipe"))
    check_data_roots(cfg)
    build_objects(cfg)
    # last: it creates the directory, which no bad value above should leave behind
    check_writable_dir(cfg.paths.cache_dir, "paths.cache_dir", fix=(
        "set MODELGUARD_CACHE (or paths.cache_dir) to a writable directory, or unset MODELGUARD_CACHE for the "
        "default outputs/cache"))


def stage_names(stages: Any) -> list[str]:
    """``cfg.stages`` as a list of names; a single name (``stages=victim``) is a one-element list."""
    names = [stages] if isinstance(stages, str) else list(stages) if isinstance(stages, (list, ListConfig)) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"stages={stages!r} is invalid: name one or more stages of {', '.join(STAGES)}, "
                         "e.g. stages=[victim,defense] or stages=victim")
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"stages={names} names unknown stage(s) {unknown}; "
                         f"allowed: {', '.join(STAGES)} (e.g. stages=[victim,defense])")
    return names


def check_run_knobs(cfg: DictConfig) -> None:
    """The knobs at the top of conf/main.yaml."""
    stage_names(cfg.stages)
    check_number(cfg.seed, "seed", integer=True, fix="set seed=0")
    for flag in ("deterministic", "fresh", "progress", "amp", "channels_last", "cudnn_benchmark"):
        check_flag(cfg[flag], flag, fix=f"set {flag}=true or {flag}=false")
    if cfg.get("threads") is not None:
        check_number(cfg.threads, "threads", low=1, integer=True, note="torch CPU threads; null: torch's default",
                     fix="set threads=1 (one job per core) or threads=null")
    check_choice(cfg.wandb.mode, "wandb.mode", ALLOWED_MODES,
                 fix="set wandb.mode=offline (no account, no network) or wandb.mode=disabled")
    resolve_device(cfg.device)  # before any stage: a missing CUDA must not leave a marker behind


def check_recipe(recipe: DictConfig, group: str) -> None:
    """A training recipe (victim, substitute): epochs, batch size, optimizer and scheduler."""
    _check_count(recipe, group, "epochs")
    check_optimization(recipe, group, group)
    check_selection(recipe.select, f"{group}.select")


def _check_count(recipe: DictConfig, name: str, knob: str) -> None:
    check_number(recipe[knob], f"{name}.{knob}", low=1, integer=True,
                 fix=f"set {name}.{knob} to a whole number ≥ 1, e.g. {name}.{knob}={EXAMPLES[knob]}")


def check_optimization(recipe: DictConfig, name: str, group: str, scheduler_optional: bool = False) -> None:
    """A recipe's batch size, optimizer and scheduler (``name``: the node as the user spells it;
    ``group``: the config group whose default.yaml shows working ones)."""
    _check_count(recipe, name, "batch_size")
    check_factory(recipe.optimizer, f"{name}.optimizer", torch.optim.Optimizer, "params", group)
    if not (scheduler_optional and recipe.scheduler is None):
        check_factory(recipe.scheduler, f"{name}.scheduler", torch.optim.lr_scheduler.LRScheduler, "optimizer", group)


def check_data_roots(cfg: DictConfig) -> None:
    """No dataset member may read from an empty root: ``Path("")`` is the working directory, so
    an empty ``MODELGUARD_DATA=`` would read datasets from wherever the command runs. Refused like
    an empty ``MODELGUARD_CACHE``; the embedded and synthetic options read no root, so it does
    not matter to them."""
    empty = [key for key, value in _roots(plain(cfg.dataset), "dataset") if not str(value).strip()]
    if not empty:
        return
    data_dir = cfg.paths.get("data_dir")
    if data_dir is not None and not str(data_dir).strip():
        raise ValueError(f"paths.data_dir={str(data_dir)!r} is empty (is MODELGUARD_DATA set to an empty string?); "
                         "set MODELGUARD_DATA (or paths.data_dir) to the directory holding the datasets "
                         "(docs/datasets.md), or unset MODELGUARD_DATA for the default data/")
    raise ValueError(f"{empty[0]}='' is empty; set it to the directory holding the dataset, or remove the "
                     "override for the default ${paths.data_dir}")


def _roots(node: Any, prefix: str):
    """(``dataset.<...>.root``, value) for every ``root`` key in a plain dataset node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "root" and (value is None or isinstance(value, str)):
                yield f"{prefix}.{key}", "" if value is None else value
            else:
                yield from _roots(value, f"{prefix}.{key}")


def check_shadow_recipe(node: Any) -> None:
    """``substitute.shadow_recipe``: null (the substitute's recipe), or batch_size, optimizer and
    scheduler (null: a constant learning rate) for D-DAE's shadow models."""
    missing_shadow_recipe_keys(node)
    if node is not None:
        check_optimization(node, "substitute.shadow_recipe", "substitute", scheduler_optional=True)


def check_factory(node: Any, name: str, base: type, runtime_arg: str, group: str) -> None:
    """An optimizer or scheduler node: a _partial_ node naming a subclass of ``base`` whose knobs
    the class takes, with the numeric ones in range. Checked on the signature, not built: the
    first optimizer built in a process imports for seconds (torch._dynamo), which a bad value
    should not wait for."""
    fix = f"see conf/{group}/default.yaml for a working {name.rsplit('.', 1)[-1]}"
    if not isinstance(node, DictConfig) or not node.get("_partial_", False) or "_target_" not in node:
        raise ValueError(f"{name}={node!r} is invalid: it must be a node with _target_ and _partial_: true; {fix}")
    try:
        cls = get_object(node._target_)
    except Exception as err:  # noqa: BLE001 - Hydra reports a bad path in several ways
        raise ValueError(f"{name}._target_={node._target_!r} cannot be imported ({_cause(err)}); {fix}") from None
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ValueError(f"{name}._target_={node._target_!r} is not a subclass of {base.__module__}.{base.__name__}; {fix}")
    check_training_knobs(node, name)
    knobs = {k: v for k, v in node.items() if not str(k).startswith("_")}
    try:
        inspect.signature(cls).bind(**{runtime_arg: None}, **knobs)
    except TypeError as err:
        raise ValueError(f"{name} does not fit {cls.__name__} ({err}); {fix}") from None


def build_objects(cfg: DictConfig) -> None:
    """Build every configured object once. Factories that take runtime shapes (arch:
    num_classes, ...; also ``substitute.shadow_arch``) are only resolved, after their own knob
    checks (``arch.base.knob_checks``). The constructor's own message is raised as is, without
    Hydra's wrapping."""
    nodes = {group: cfg[group] for group in science_groups(cfg)}
    if isinstance(cfg.get("loader"), DictConfig):
        nodes["loader"] = cfg.loader  # not science (it never changes results), but checked all the same
    if cfg.substitute.get("shadow_arch") is not None:
        nodes["substitute.shadow_arch"] = cfg.substitute.shadow_arch  # a node of the arch group
    for group, node in nodes.items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            continue
        try:
            factory = get_object(target)
            if not inspect.isclass(factory):  # a factory of runtime shapes: its own knob checks, nothing built
                check_knobs(factory, node, group)
            instantiate(node, _partial_=not inspect.isclass(factory))
        except InstantiationException as err:
            cause = err
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, ValueError):
                raise cause from None
            raise ValueError(f"{group} cannot be built: {_cause(cause)}; check the knobs against "
                             f"conf/{group.replace('substitute.shadow_', '')}/ (python main.py --cfg job shows the composed config)") from None


def _cause(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"
