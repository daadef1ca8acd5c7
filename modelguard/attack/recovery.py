"""Attacker-side recovery inside the query stage: build the table, fit the recoverer, decode."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from modelguard.attack.table_build import build_recovery_table
from modelguard.metrics import row_l1


def recover_labels(cfg: DictConfig, data, api, attack, log) -> tuple[torch.Tensor, dict[str, Any]]:
    """Labels the substitute trains on: the released answers, or their recovery."""
    recoverer = instantiate(cfg.recover)
    if not recoverer.needs_table:
        return log.released, {}
    clean_table, perturbed_table, table_metrics = build_recovery_table(cfg, data, api, attack, log)
    recoverer.fit(clean_table, perturbed_table)
    recovered = recoverer.recover(log.released)
    metrics = dict(table_metrics)
    metrics["recover/l1_mean"] = row_l1(recovered.double(), log.clean.double()).mean().item()
    metrics["recover/released_l1_mean"] = row_l1(log.released.double(), log.clean.double()).mean().item()
    return recovered, metrics
