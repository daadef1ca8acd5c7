"""D-DAE shadow models (spec attacks §6): N models, each trained on K random classes of the
query pool, whose outputs on the attacker's queries are plausible clean posteriors.

Cached like the victim (shared by every run and job with the same dataset, arch, seed and
recipe), trained under a lock so concurrent jobs train them once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.engine import fit, predict_probs
from modelguard.stages.common import build_model, cached_artifact, config_hash, device_of
from modelguard.utils.io import load_tensors, save_tensors
from modelguard.utils.seed import make_generator


def shadow_dir(cfg: DictConfig, count: int, epochs: int) -> Path:
    key = config_hash(cfg.dataset, cfg.arch, cfg.substitute, cfg.seed, count, epochs)
    return Path(cfg.paths.cache_dir) / "shadows" / f"seed={cfg.seed}" / key


def train_shadows(cfg: DictConfig, data, count: int, epochs: int) -> list[torch.nn.Module]:
    directory = shadow_dir(cfg, count, epochs)
    pool, pool_labels = data.query_pool.tensors
    classes = torch.unique(pool_labels)
    k = data.num_classes
    if len(classes) < k:
        raise ValueError(f"attack.table_source=shadows needs a labelled query pool with at least {k} classes "
                         f"(the victim's K); this pool has {len(classes)}. Use attack=ddae_plus instead")

    def build(d: Path) -> dict[str, Any]:
        device = device_of(cfg)
        for i in range(count):
            g = make_generator(cfg.seed, f"shadow-{i}")
            chosen = classes[torch.randperm(len(classes), generator=g)[:k]]
            relabel = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
            relabel[chosen] = torch.arange(k)
            keep = relabel[pool_labels] >= 0
            torch.manual_seed(cfg.seed * 1000 + i)
            model = build_model(cfg.arch, data)
            fit(model, pool[keep], relabel[pool_labels[keep]], epochs=epochs, batch_size=cfg.substitute.batch_size,
                optimizer=instantiate(cfg.substitute.optimizer), scheduler=instantiate(cfg.substitute.scheduler),
                generator=g, device=device, desc=f"shadow {i + 1}/{count}", progress=cfg.progress)
            save_tensors(model.state_dict(), d / f"shadow_{i}.pt")
        return {"shadows": count}

    cached_artifact(directory, build)
    models = []
    for i in range(count):
        model = build_model(cfg.arch, data)
        model.load_state_dict(load_tensors(directory / f"shadow_{i}.pt"))
        models.append(model.eval())
    return models


def shadow_outputs(models: list[torch.nn.Module], inputs: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean samples = every shadow's softmax on every input, tagged with the input's index."""
    outs = [predict_probs(m, inputs, device=device) for m in models]
    index = torch.arange(len(inputs)).repeat(len(models))
    return torch.cat(outs), index
