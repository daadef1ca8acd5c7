"""What stages share: building data and models from the config, the victim cache, done markers."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from modelguard.dataset.base import ExperimentData
from modelguard.utils.device import resolve_device
from modelguard.utils.io import file_lock, load_json, load_tensors, save_json, save_tensors


def config_hash(*nodes: Any) -> str:
    """Short stable hash of resolved config nodes (plain values)."""
    plain = [OmegaConf.to_container(n, resolve=True) if isinstance(n, DictConfig) else n for n in nodes]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def device_of(cfg: DictConfig) -> torch.device:
    return resolve_device(cfg.device)


@lru_cache(maxsize=4)
def _load_data(dataset_yaml: str) -> ExperimentData:
    return instantiate(OmegaConf.create(dataset_yaml)).load()


def load_data(cfg: DictConfig) -> ExperimentData:
    return _load_data(OmegaConf.to_yaml(cfg.dataset, resolve=True))


def build_model(arch_cfg: DictConfig, data: ExperimentData) -> torch.nn.Module:
    return instantiate(arch_cfg, num_classes=data.num_classes, in_channels=data.in_channels,
                       image_size=data.image_size, mean=list(data.mean), std=list(data.std))


def _short_name(node: DictConfig) -> str:
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1]


def victim_dir(cfg: DictConfig) -> Path:
    """Shared cache of the victim, keyed by dataset, architecture, seed and training recipe."""
    key = config_hash(cfg.dataset, cfg.arch, cfg.victim, cfg.seed)
    return (Path(cfg.paths.cache_dir) / "victims" / f"{_short_name(cfg.dataset)}-{_short_name(cfg.arch)}"
            / f"seed={cfg.seed}" / key)


def cached_artifact(directory: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build an artifact directory once, even with concurrent jobs: lock, re-check, build, mark done.

    ``build(directory)`` writes its files (atomically) and returns metrics; the ``done.json``
    marker is written last, so a reader never sees a half-built artifact."""
    done = directory / "done.json"
    if done.exists():
        return load_json(done)
    with file_lock(directory / ".lock"):
        if done.exists():
            return load_json(done)
        metrics = build(directory)
        save_json(metrics, done)
        return metrics


def load_victim(cfg: DictConfig, data: ExperimentData) -> torch.nn.Module:
    path = victim_dir(cfg) / "victim.pt"
    if not (victim_dir(cfg) / "done.json").exists():  # written last: the victim's files are complete
        raise FileNotFoundError(f"no finished victim at {path.parent}; run the victim stage first "
                                "(stages=[victim,...] or simply the default stages)")
    model = build_model(cfg.arch, data)
    model.load_state_dict(load_tensors(path))
    return model.eval()


def stage_done(cfg: DictConfig, name: str) -> dict[str, Any] | None:
    """Metrics of a finished stage in this run dir, if it finished with the same config."""
    marker = output_dir(cfg) / "stages" / f"{name}.json"
    if bool(cfg.get("fresh", False)) or not marker.exists():
        return None
    record = load_json(marker)
    if record.get("config") != job_config_hash(cfg):
        return None
    return record["metrics"]


def mark_done(cfg: DictConfig, name: str, metrics: dict[str, Any]) -> None:
    save_json({"config": job_config_hash(cfg), "metrics": metrics}, output_dir(cfg) / "stages" / f"{name}.json")


def job_config_hash(cfg: DictConfig) -> str:
    """Hash of the science config (what changes results), leaving out paths, logging and stages."""
    science = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items()
               if k not in ("paths", "stages", "wandb", "fresh", "sweep_name", "progress", "threads", "device")}
    return config_hash(science)


def save_artifact(obj: Any, cfg: DictConfig, name: str) -> Path:
    path = output_dir(cfg) / name
    save_tensors(obj, path)
    return path
