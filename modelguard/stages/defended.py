"""Building the defended API from the config, with the side models some defenses need."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from modelguard.api import DefendedAPI
from modelguard.dataset.base import ExperimentData
from modelguard.dataset.loading import take
from modelguard.stages.common import (build_model, device_of, load_cached_model, load_victim, runtime_inputs,
                                      scratch, shared_artifact, victim_dir)
from modelguard.utils.io import save_tensors
from modelguard.utils.seed import make_generator, seed_torch


def build_proxy(cfg: DictConfig, data: ExperimentData) -> torch.nn.Module:
    """MAD's proxy of the attacker's model (spec attacks §5): the victim's architecture at a
    seeded random initialisation, whose BatchNorm statistics (if any) take one step from 10
    training images, as the original's lr=0 "training" does, never from pretrained weights (the
    original's "scratch" proxy). Cached next to the victim."""
    directory = victim_dir(cfg) / "mad_proxy"

    def build(d) -> dict[str, Any]:
        seed_torch(cfg.seed, "mad-proxy-init")
        proxy = build_model(cfg, data, scratch(cfg.arch))
        pick = torch.randperm(len(data.victim_train), generator=make_generator(cfg.seed, "mad-proxy"))[:10]
        proxy.train()
        with torch.no_grad():
            proxy(take(data.victim_train, pick))
        save_tensors(proxy.state_dict(), d / "proxy.pt")
        return {}

    shared_artifact(cfg, directory, build, ["proxy.pt"])
    return load_cached_model(cfg, data, directory / "proxy.pt", scratch(cfg.arch))


def load_misinformation_model(cfg: DictConfig, data: ExperimentData) -> torch.nn.Module:
    path = victim_dir(cfg) / "misinformation.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"defense=am needs the misinformation model trained with the victim, but {path} is missing; "
            "set victim.misinformation=true (the default) and rerun the victim stage")
    return load_cached_model(cfg, data, path)


def build_defense(cfg: DictConfig, data: ExperimentData):
    """Instantiate cfg.defense with the side models its constructor names: ``proxy`` (MAD) and
    ``misinformation_model`` (AM). A defense declares a side model by taking it as a constructor
    argument of that name; only the side models it names are built."""
    side_models = {"proxy": lambda: build_proxy(cfg, data),
                   "misinformation_model": lambda: load_misinformation_model(cfg, data)}
    return instantiate(cfg.defense, **runtime_inputs(get_class(cfg.defense._target_), side_models))


def build_api(cfg: DictConfig, data: ExperimentData, budget: int | None = None) -> DefendedAPI:
    return DefendedAPI(load_victim(cfg, data), build_defense(cfg, data), instantiate(cfg.quantize),
                       budget=budget, device=device_of(cfg))
