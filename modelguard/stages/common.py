"""What stages share: building data and models from the config, the victim cache, done markers."""
from __future__ import annotations

import inspect
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from modelguard.dataset.base import ExperimentData
from modelguard.dataset.loading import LoaderSettings
from modelguard.utils.cache import Built, cached_artifact, config_hash
from modelguard.utils.device import resolve_device
from modelguard.utils.io import UnreadableArtifact, load_json, load_tensors, save_json, save_tensors

log = logging.getLogger("modelguard")


def plain(node: Any) -> Any:
    """A config node as plain, resolved values (anything else unchanged)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def node_hash(*nodes: Any) -> str:
    """Short stable hash of resolved config nodes and plain values (``utils.cache.config_hash``)."""
    return config_hash(*(plain(n) for n in nodes))


def runtime_inputs(fn: Callable, providers: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """The keyword arguments ``fn`` takes from ``providers``, built now; the others are never built.

    How a stage hands library objects what exists only at run time: a class or method declares
    each runtime input it takes by naming it as a parameter (MAD's ``proxy``, JBDA-TR's
    ``train_substitute``), and the stage keeps one table saying how to build each name. Nothing
    is probed on the object, and nothing it did not ask for is built."""
    wanted = inspect.signature(fn).parameters
    return {name: build() for name, build in providers.items() if name in wanted}


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def device_of(cfg: DictConfig) -> torch.device:
    return resolve_device(cfg.device)


def loader_of(cfg: DictConfig) -> LoaderSettings:
    """How the run reads datasets on disk (``cfg.loader``)."""
    return instantiate(cfg.loader)


@lru_cache(maxsize=4)
def _load_data(dataset_yaml: str) -> ExperimentData:
    return instantiate(OmegaConf.create(dataset_yaml)).load()


def load_data(cfg: DictConfig) -> ExperimentData:
    return _load_data(OmegaConf.to_yaml(cfg.dataset, resolve=True))


def build_model(cfg: DictConfig, data: ExperimentData, arch: DictConfig | None = None) -> torch.nn.Module:
    """A fresh ``cfg.arch`` model (or ``arch``, another node of the arch group) for ``data``; on
    CUDA with the run's speed settings (``amp``: bfloat16 autocast of forward passes,
    ``channels_last``), which CPU runs ignore."""
    model = instantiate(cfg.arch if arch is None else arch, num_classes=data.num_classes,
                        in_channels=data.in_channels, image_size=data.image_size, mean=list(data.mean),
                        std=list(data.std))
    if device_of(cfg).type == "cuda":
        model.speed_up(torch.bfloat16 if cfg.amp else None, bool(cfg.channels_last))
    return model


def scratch(arch: DictConfig) -> DictConfig:
    """``arch`` without pretrained weights: for a model that must start random (MAD's proxy, spec
    attacks §5) or whose weights a checkpoint replaces at once (no weights file read for nothing)."""
    if arch.get("pretrained") is None:
        return arch
    return OmegaConf.merge(arch, {"pretrained": None})


def _short_name(node: DictConfig) -> str:
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1]


# Dataset knobs that say where the data is or how to fetch it, not what it is: moving the data
# root or allowing a download must not retrain cached victims or shadows.
LOCATION_KEYS = ("root", "download", "allow_pickle_release")


def data_identity(node: DictConfig) -> Any:
    """The dataset node as plain values without ``LOCATION_KEYS`` (at any depth): its part of a cache key."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in LOCATION_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(plain(node))


def dataset_name(node: DictConfig) -> str:
    """Short name of a dataset option for cache paths: the victim member's class for a bundle
    read from disk (``CIFAR10``, not ``OnDiskData``), else the option's class."""
    victim = node.get("victim")
    return _short_name(victim) if isinstance(victim, DictConfig) and "_target_" in victim else _short_name(node)


# Bump when the way a victim is initialised or trained changes: it is part of the cache key, so
# victims (and MAD proxies) of an older scheme are never reused. 2: initialisation from the
# named streams "victim-init" and "mad-proxy-init" (the global RNG was seeded with seed and seed + 1).
# 3: the random train transforms of data on disk draw from per-item seeds (dataset/loading.py), not
# from the workers' or the global RNG.
VICTIM_SCHEME = 3


def victim_dir(cfg: DictConfig) -> Path:
    """Shared cache of the victim, keyed by dataset, architecture, seed, training recipe and scheme."""
    key = node_hash(data_identity(cfg.dataset), cfg.arch, cfg.victim, cfg.seed, f"scheme={VICTIM_SCHEME}")
    return (Path(cfg.paths.cache_dir) / "victims" / f"{dataset_name(cfg.dataset)}-{_short_name(cfg.arch)}"
            / f"seed={cfg.seed}" / key)


def victim_files(cfg: DictConfig) -> list[str]:
    """The files of a finished victim cache entry (besides done.json)."""
    return ["victim.pt"] + (["misinformation.pt"] if cfg.victim.misinformation else [])


def shared_artifact(cfg: DictConfig, directory: Path, build: Callable[[Path], dict[str, Any]],
                    files: list[str]) -> Built:
    """``utils.cache.cached_artifact`` for the shared caches (victims, proxies, shadows): each file
    is read back before it is trusted; a damaged one stops the run with its path and the fix,
    and ``fresh=true`` rebuilds it."""
    try:
        return cached_artifact(directory, build, files=files, verify=load_tensors,
                               rebuild_unreadable=bool(cfg.fresh))
    except UnreadableArtifact as err:
        raise UnreadableArtifact(err.path, cache_fix(err.problem, directory)) from None


def cache_fix(problem: str, directory: Path) -> str:
    return (f"{problem}. It is part of the shared cache entry {directory}: rerun with fresh=true to "
            "rebuild it (or delete that directory)")


def load_cached_model(cfg: DictConfig, data: ExperimentData, path: Path,
                      arch: DictConfig | None = None) -> torch.nn.Module:
    """A model of ``arch`` (default cfg.arch) from a shared cache file, in eval mode; a damaged file
    is named with the fix. Built without pretrained weights: the file replaces them at once."""
    model = build_model(cfg, data, scratch(cfg.arch if arch is None else arch))
    try:
        state = load_tensors(path)
    except UnreadableArtifact as err:
        raise UnreadableArtifact(err.path, cache_fix(err.problem, path.parent)) from None
    model.load_state_dict(state)
    return model.eval()


def load_victim(cfg: DictConfig, data: ExperimentData) -> torch.nn.Module:
    path = victim_dir(cfg) / "victim.pt"
    if not (victim_dir(cfg) / "done.json").exists() or not path.exists():  # done.json is written last
        raise FileNotFoundError(f"no finished victim at {path.parent}; run the victim stage first "
                                "(stages=[victim,...] or simply the default stages)")
    return load_cached_model(cfg, data, path)


def stage_done(cfg: DictConfig, name: str) -> dict[str, Any] | None:
    """Metrics of a finished stage in this run dir, if it finished with the same config.

    An unreadable marker (empty, truncated) counts as not finished: the stage runs again."""
    marker = output_dir(cfg) / "stages" / f"{name}.json"
    if bool(cfg.get("fresh", False)) or not marker.exists():
        return None
    try:
        record = load_json(marker)
    except UnreadableArtifact as err:
        log.warning("%s; running stage %s again", err, name)
        return None
    if not isinstance(record, dict) or record.get("config") != job_config_hash(cfg) or "metrics" not in record:
        return None
    return record["metrics"]


def mark_done(cfg: DictConfig, name: str, metrics: dict[str, Any]) -> None:
    save_json({"config": job_config_hash(cfg), "metrics": metrics}, output_dir(cfg) / "stages" / f"{name}.json")


def ignored_keys(cfg: DictConfig) -> list[str]:
    """The keys that do not change results (``run_keys`` marked ``ignored`` in conf/main.yaml)."""
    return [k for k, kind in cfg.run_keys.items() if kind == "ignored"]


def science(cfg: DictConfig) -> dict[str, Any]:
    """The unresolved config without ``run_keys`` and the ignored keys: what changes results."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("run_keys", None)
    for key in ignored_keys(cfg):
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def science_groups(cfg: DictConfig) -> list[str]:
    """The config's science nodes (dataset, arch, victim, defense, ...), in config order."""
    return [k for k, v in science(cfg).items() if isinstance(v, dict)]


def job_config_hash(cfg: DictConfig) -> str:
    """Hash of the science config (what changes results): the done markers' key."""
    return node_hash(science(cfg))


def save_artifact(obj: Any, cfg: DictConfig, name: str) -> Path:
    path = output_dir(cfg) / name
    save_tensors(obj, path)
    return path
