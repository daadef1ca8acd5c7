"""D-DAE shadow models (spec attacks §6): N models trained on the query pool, whose outputs on
the attacker's queries are plausible clean posteriors.

Each shadow i has its own task (``plan_shadows``):
- a class subset of size K of the pool's classes, drawn from its own named generator stream,
  in a seeded order that is its label map (the n-th chosen class becomes label n), as the
  original's random class subsets;
- its own images (``attack.shadow_split``): every image of its classes ("all", the original),
  or only its own share of the pool ("disjoint": a seeded, class-stratified split of the
  pool into N parts). "auto" picks "disjoint" when the pool has exactly K classes: there
  every class subset is the whole pool, so with "all" the shadows would learn one task
  under permuted labels (the embedded default: 10 Fashion-MNIST classes, K = 10);
- its own initialisation and batch order (named streams ``shadow-<i>-init``/``-batches``).

Cached like the victim (shared by every run and job with the same dataset, arch, seed,
recipe, count, epochs, split and ``SHADOW_SCHEME``), trained under a lock so concurrent jobs
train them once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.engine import fit, predict_probs
from modelguard.stages.common import build_model, device_of, node_hash as config_hash
from modelguard.utils.cache import cached_artifact
from modelguard.utils.io import load_tensors, save_tensors
from modelguard.utils.seed import make_generator

# Bump when the way shadows are chosen or trained changes: it is part of the cache key, so
# shadows of an older scheme are never reused. 2: per-shadow image shares and named streams.
SHADOW_SCHEME = 2


@dataclass
class ShadowTask:
    index: torch.Tensor    # [n] pool indices the shadow trains on
    labels: torch.Tensor   # [n] its labels 0..K-1 for those images
    classes: torch.Tensor  # [K] the pool classes it uses; classes[n] becomes label n


def resolve_split(split: str, pool_classes: int, k: int) -> str:
    if split == "auto":
        return "disjoint" if pool_classes <= k else "all"
    return split


def plan_shadows(pool_labels: torch.Tensor, k: int, count: int, seed: int, split: str = "auto") -> list[ShadowTask]:
    """What each of ``count`` shadows trains on (no training): see the module docstring."""
    classes = torch.unique(pool_labels)
    if len(classes) < k:
        raise ValueError(f"attack.table_source=shadows needs a labelled query pool with at least {k} classes "
                         f"(the victim's K); this pool has {len(classes)}. Use attack=ddae_plus instead")
    mode = resolve_split(split, len(classes), k)
    share = torch.zeros(len(pool_labels), dtype=torch.long)
    if mode == "disjoint":
        g = make_generator(seed, "shadow-shares")
        for c in classes.tolist():  # stratified: every class spread evenly over the shares
            members = (pool_labels == c).nonzero().squeeze(1)
            members = members[torch.randperm(len(members), generator=g)]
            offset = int(torch.randint(count, (1,), generator=g))
            share[members] = (torch.arange(len(members)) + offset) % count
    tasks = []
    for i in range(count):
        g = make_generator(seed, f"shadow-{i}-labels")
        chosen = classes[torch.randperm(len(classes), generator=g)[:k]]
        relabel = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
        relabel[chosen] = torch.arange(k)
        keep = relabel[pool_labels] >= 0
        if mode == "disjoint":
            keep &= share == i
        index = keep.nonzero().squeeze(1)
        if len(index) == 0:
            raise ValueError(f"shadow {i} of attack.shadow_count={count} gets no pool images with "
                             f"attack.shadow_split={split}; lower attack.shadow_count or set attack.shadow_split=all")
        tasks.append(ShadowTask(index=index, labels=relabel[pool_labels[index]], classes=chosen))
    return tasks


def shadow_dir(cfg: DictConfig, count: int, epochs: int, split: str = "auto") -> Path:
    key = config_hash(cfg.dataset, cfg.arch, cfg.substitute, cfg.seed, count, epochs, split,
                      f"scheme={SHADOW_SCHEME}")
    return Path(cfg.paths.cache_dir) / "shadows" / f"seed={cfg.seed}" / key


def train_shadows(cfg: DictConfig, data, count: int, epochs: int, split: str = "auto") -> list[torch.nn.Module]:
    directory = shadow_dir(cfg, count, epochs, split)
    pool, pool_labels = data.query_pool.tensors
    tasks = plan_shadows(pool_labels, data.num_classes, count, int(cfg.seed), split)

    def build(d: Path) -> dict[str, Any]:
        device = device_of(cfg)
        for i, task in enumerate(tasks):
            torch.manual_seed(make_generator(cfg.seed, f"shadow-{i}-init").initial_seed())
            model = build_model(cfg.arch, data)
            fit(model, pool[task.index], task.labels, epochs=epochs, batch_size=cfg.substitute.batch_size,
                optimizer=instantiate(cfg.substitute.optimizer), scheduler=instantiate(cfg.substitute.scheduler),
                generator=make_generator(cfg.seed, f"shadow-{i}-batches"), device=device,
                desc=f"shadow {i + 1}/{count}", progress=cfg.progress)
            save_tensors(model.state_dict(), d / f"shadow_{i}.pt")
        return {"shadows": count, "scheme": SHADOW_SCHEME,
                "split": resolve_split(split, len(torch.unique(pool_labels)), data.num_classes),
                "train_sizes": [len(t.index) for t in tasks]}

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
