"""Stage `query`: the attacker queries the defended API (cfg.policy) and builds its transfer set.

Recovery (cfg.recover), when the attack uses one, runs on all answers after the queries
(spec attacks §8.1 step 8), then hard labels are applied (step 9)."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.attack.recovery import recover_labels
from modelguard.metrics import row_l1
from modelguard.stages.common import load_data, output_dir
from modelguard.stages.defended import build_api
from modelguard.utils.io import save_tensors
from modelguard.utils.seed import make_generator


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    attack = instantiate(cfg.attack)
    api = build_api(cfg, data, budget=attack.budget * attack.queries_per_image)
    policy = instantiate(cfg.policy)
    log = policy.collect(api, data.query_pool.tensors[0], attack, make_generator(cfg.seed, "query"),
                         progress=bool(cfg.progress), **policy_context(cfg, data, attack, policy))
    labels, recover_metrics = recover_labels(cfg, data, api, attack, log)
    if attack.hard_label:
        labels = torch.nn.functional.one_hot(labels.argmax(1), labels.shape[1]).float()
    transfer = {"pool_index": log.pool_index, "labels": labels.float(), "released": log.released.float(),
                "clean": log.clean.float()}
    if (log.pool_index < 0).any():
        transfer["inputs"] = log.inputs[log.pool_index < 0].half()
    save_tensors(transfer, output_dir(cfg) / "transfer.pt")
    metrics = {"queries": api.queries, "query/transfer_size": len(labels),
               "query/l1_mean": row_l1(log.clean.double(), log.released.double()).mean().item()}
    metrics.update(recover_metrics)
    metrics.update(getattr(policy, "metrics", {}))
    return metrics


def policy_context(cfg: DictConfig, data, attack, policy) -> dict[str, Any]:
    """Extra call-site arguments a policy declares it needs (JBDA-TR trains substitutes)."""
    if not getattr(policy, "needs_trainer", False):
        return {}
    from modelguard.stages.substitute import make_trainer
    return {"train_substitute": make_trainer(cfg, data), "relabel": lambda api_, log_: recover_labels(cfg, data, api_, attack, log_)}


def load_transfer_inputs(transfer: dict[str, torch.Tensor], pool: torch.Tensor) -> torch.Tensor:
    """Images of a saved transfer set, in order: pool images by index, synthetic ones stored."""
    index = transfer["pool_index"]
    inputs = torch.empty((len(index), *pool.shape[1:]), dtype=pool.dtype)
    inputs[index >= 0] = pool[index[index >= 0]]
    if (index < 0).any():
        inputs[index < 0] = transfer["inputs"].to(pool.dtype)
    return inputs
