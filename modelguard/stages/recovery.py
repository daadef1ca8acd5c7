"""Attacker-side recovery inside the query stage (spec attacks §8.1 step 8): the glue that reads
the config. Builds the recovery table from ``attack.table_source`` (a ``recover.sources``
object), fits ``cfg.recover`` on it and decodes the released answers.

The table: the source's clean rows, then their images under the defended API's offline form
(its simulation, with the defender's side information per input and the quantizer's live
codebook, as the paper's strong adaptive attacker), then, behind a quantizer with an eps
(ModelGuard-S, ``quantize.eps``), the pairs farther apart than eps are dropped.

D-DAE's shadow models are cached like the victim (shared by every run and job with the same
dataset, arch, seed, substitute recipe, count, epochs, split and ``SHADOW_SCHEME``), trained
under a lock so concurrent jobs train them once."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.dataset.loading import labels_of
from modelguard.metrics import row_l1
from modelguard.recover.shadows import resolve_split, train_shadows
from modelguard.recover.sources import ShadowModels, TableSource
from modelguard.recover.table import epsilon_filter, simulate_table
from modelguard.stages.common import (build_model, data_identity, device_of, load_cached_model, loader_of, node_hash, runtime_inputs,
                                      shared_artifact)
from modelguard.utils.io import save_tensors
from modelguard.utils.seed import make_generator

# Bump when the way shadows are chosen or trained changes: it is part of the cache key, so
# shadows of an older scheme are never reused. 2: per-shadow image shares and named streams.
# 3: on data on disk, training on the pool's train transform (pool_augmented) and keeping the
# best epoch on the shadow's test split (pool_test). 4: per-item seeds for the train transforms of
# data on disk (dataset/loading.py).
SHADOW_SCHEME = 4


def recover_labels(cfg: DictConfig, data, api, attack, log) -> tuple[torch.Tensor, dict[str, Any]]:
    """Labels the substitute trains on: the released answers, or their recovery."""
    recoverer = instantiate(cfg.recover)
    if not recoverer.needs_table:
        return log.released, {}
    if attack.table_source is None:
        raise ValueError(f"{cfg.recover._target_.rsplit('.', 1)[-1]} (the recover option) needs a recovery "
                         "table, but attack.table_source is null; choose attack=bayes, ddae or ddae_plus, "
                         "which name a table source")
    clean_table, perturbed_table, table_metrics = build_recovery_table(cfg, data, api, attack, log)
    recoverer.fit(clean_table, perturbed_table)
    recovered = recoverer.recover(log.released)
    metrics = dict(table_metrics)
    metrics["recover/l1_mean"] = row_l1(recovered.double(), log.clean.double()).mean().item()
    metrics["recover/released_l1_mean"] = row_l1(log.released.double(), log.clean.double()).mean().item()
    return recovered, metrics


def build_recovery_table(cfg: DictConfig, data, api, attack, log) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    start = time.perf_counter()
    source: TableSource = attack.table_source
    size = attack.table_rows_per_query * len(log.released)
    generator = make_generator(cfg.seed, f"recovery-table-{len(log.released)}")
    clean, index = source.clean_rows(size, generator, **runtime_inputs(source.clean_rows, {
        "clean": lambda: log.clean,
        "inputs": lambda: log.images(data.query_pool),
        "shadow_models": lambda: shadow_models(cfg, data, source),
        "device": lambda: device_of(cfg),
    }))
    xinfo = api.side_information(log.images(data.query_pool), loader=loader_of(cfg))
    perturbed = simulate_table(clean.to(torch.float32), api.simulate, index=index, xinfo=xinfo,
                               progress=bool(cfg.progress), device=api.device)
    eps = cfg.quantize.get("eps")  # a quantizer with an eps ball (ModelGuard-S): the table's eps filter
    if eps is not None:
        clean, perturbed = epsilon_filter(clean, perturbed, float(eps))
    # Rows per query: the paper has 20 (1e6 rows for 5e4 queries; with D-DAE, 20 shadows x 1 row
    # each); with shadows it is at most attack.table_source.count, and the ModelGuard-S eps filter
    # drops rows.
    metrics = {"recover/table_rows": len(clean),
               "recover/table_rows_per_query": round(len(clean) / max(len(log.released), 1), 4),
               "recover/table_build_s": round(time.perf_counter() - start, 3)}
    return clean.float(), perturbed.float(), metrics


def shadow_dir(cfg: DictConfig, source: ShadowModels) -> Path:
    key = node_hash(data_identity(cfg.dataset), cfg.arch, cfg.substitute, cfg.seed, source.count, int(cfg.substitute.shadow_epochs),
                    source.split, f"scheme={SHADOW_SCHEME}")
    return Path(cfg.paths.cache_dir) / "shadows" / f"seed={cfg.seed}" / key


def shadow_arch(cfg: DictConfig) -> DictConfig:
    """The shadows' architecture: ``substitute.shadow_arch``, or the run's ``arch`` when null (the
    paper's shadows are AlexNets whatever the victim, experiment-grid §1)."""
    node = cfg.substitute.get("shadow_arch")
    return cfg.arch if node is None else node


SHADOW_RECIPE_KEYS = ("batch_size", "optimizer", "scheduler")


def missing_shadow_recipe_keys(node: Any) -> None:
    """Refuse a ``substitute.shadow_recipe`` that is not null and lacks one of ``SHADOW_RECIPE_KEYS``
    (stages/validate.py checks their values before any stage runs)."""
    if node is None:
        return
    missing = [k for k in SHADOW_RECIPE_KEYS if not isinstance(node, DictConfig) or k not in node]
    if missing:
        shown = "" if isinstance(node, DictConfig) else f"={node!r}"
        raise ValueError(f"substitute.shadow_recipe{shown} lacks {', '.join(missing)}: it needs batch_size, optimizer "
                         "and scheduler (as substitute: has them; scheduler may be null), or null to train the shadows "
                         "with the substitute's")


def shadow_recipe(cfg: DictConfig) -> DictConfig:
    """What the shadows train with (batch_size, optimizer, scheduler): ``substitute.shadow_recipe``,
    or the substitute's own recipe when null."""
    node = cfg.substitute.get("shadow_recipe")
    if node is None:
        return cfg.substitute
    missing_shadow_recipe_keys(node)
    return node


def shadow_models(cfg: DictConfig, data, source: ShadowModels) -> list[torch.nn.Module]:
    """The source's shadow models (``shadow_arch``), trained once with ``shadow_recipe`` for
    ``substitute.shadow_epochs`` epochs and cached.

    Spec attacks §6: on data on disk the shadows train on the pool under its family's train
    transform (``pool_augmented``, the same images as the query pool) and each keeps the epoch of
    best accuracy on its own test split, drawn from the pool's test split (``pool_test``); the
    embedded and synthetic data have neither, so their shadows train on the query pool and keep
    the last epoch."""
    directory = shadow_dir(cfg, source)
    pool_labels = labels_of(data.query_pool)
    train_pool = getattr(data, "pool_augmented", None)
    train_pool = data.query_pool if train_pool is None else train_pool
    test_pool = getattr(data, "pool_test", None)
    tasks = source.plan(pool_labels, data.num_classes, int(cfg.seed))
    recipe, arch = shadow_recipe(cfg), shadow_arch(cfg)

    def build(d: Path) -> dict[str, Any]:
        selections: list[dict] = []
        models = train_shadows(tasks, train_pool, lambda: build_model(cfg, data, arch),
                               epochs=int(cfg.substitute.shadow_epochs),
                               batch_size=recipe.batch_size, optimizer=instantiate(recipe.optimizer),
                               scheduler=instantiate(recipe.scheduler), seed=int(cfg.seed), device=device_of(cfg),
                               loader=loader_of(cfg), test_pool=test_pool, selections=selections,
                               progress=bool(cfg.progress))
        for i, model in enumerate(models):
            save_tensors(model.state_dict(), d / f"shadow_{i}.pt")
        return {"shadows": source.count, "scheme": SHADOW_SCHEME,
                "split": resolve_split(source.split, len(torch.unique(pool_labels)), data.num_classes),
                "train_sizes": [len(t.index) for t in tasks],
                "selected_epochs": [r["selected_epoch"] for r in selections],
                "test_accs": [r["test_acc"] for r in selections],
                "test_sizes": [r["test_size"] for r in selections]}

    names = [f"shadow_{i}.pt" for i in range(source.count)]
    shared_artifact(cfg, directory, build, names)
    return [load_cached_model(cfg, data, directory / name, arch) for name in names]
