"""Stage `query`: the attacker queries the defended API (cfg.policy) and builds its transfer set.

Recovery (cfg.recover), when the attack uses one, runs on all answers after the queries
(spec attacks §8.1 step 8), then hard labels are applied (step 9)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import TensorDataset

from modelguard.metrics import row_l1
from modelguard.stages.common import load_data, loader_of, output_dir, runtime_inputs
from modelguard.stages.defended import build_api
from modelguard.stages.recovery import recover_labels
from modelguard.stages.training import make_trainer
from modelguard.stages.transfer import save_transfer
from modelguard.utils.seed import make_generator


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    attack = instantiate(cfg.attack)
    policy = instantiate(cfg.policy)
    api = build_api(cfg, data, budget=policy.max_queries(attack))
    log = policy.collect(api, data.query_pool, attack, make_generator(cfg.seed, "query"),
                         progress=bool(cfg.progress), **policy_inputs(cfg, data, attack, policy, api))
    labels, recover_metrics = recover_labels(cfg, data, api, attack, log)
    if attack.hard_label:
        labels = torch.nn.functional.one_hot(labels.argmax(1), labels.shape[1]).float()
    save_transfer(output_dir(cfg) / "transfer.pt", log, labels)
    metrics = {"queries": api.queries, "query/transfer_size": len(labels),
               "query/l1_mean": row_l1(log.clean.double(), log.released.double()).mean().item()}
    metrics.update(recover_metrics)
    metrics.update(policy.metrics)
    return metrics


def precheck(cfg: DictConfig) -> None:
    """What needs the data to be checked (the budget against the pool), before any stage runs."""
    data = load_data(cfg)
    # a pool on disk has a fixed size; only the embedded and synthetic options have dataset.pool_size
    pool_name = None if "pool_size" in cfg.dataset else getattr(data.query_pool, "name", "on disk")
    instantiate(cfg.policy).check_pool(instantiate(cfg.attack), len(data.query_pool), pool_name)


def outputs(cfg: DictConfig) -> list[Path]:
    return [output_dir(cfg) / "transfer.pt"]


def policy_inputs(cfg: DictConfig, data, attack, policy, api) -> dict[str, Any]:
    """The runtime inputs ``policy.collect`` names (``stages.common.runtime_inputs``): the pool
    family's train view and, for a pool on disk, its per-image train transform (``pool_augmented``;
    KnockoffNets' augmented queries); substitute training, relabelling,
    the dataset's normalisation and the defense's eps where the original took it (JBDA-TR)."""

    def train_substitute():
        trainer = make_trainer(cfg, data)
        # JBDA-TR synthesises from the substitute as trained (the last epoch), as the original
        # does with its in-memory model; substitute.select only picks the weights reported/saved.
        return lambda inputs, labels, tag: trainer(TensorDataset(inputs, labels), tag, keep="last")

    return runtime_inputs(policy.collect, {
        "dataset_view": lambda: data.pool_train_view,
        "pool_augmented": lambda: getattr(data, "pool_augmented", None),
        "train_substitute": train_substitute,
        "relabel": lambda: (lambda api_, log_: recover_labels(cfg, data, api_, attack, log_)),
        "defense_eps": lambda: api.defense.original_jbda_eps(),
        "mean": lambda: tuple(data.mean),
        "std": lambda: tuple(data.std),
        "loader": lambda: loader_of(cfg),
    })
