"""Stage `defense`: the defended victim's utility on the victim's test set (spec defenses §8.2).

Protected accuracy = top-1 accuracy of the released vectors; distortion = per-sample L1, L2
and KL between clean and released vectors. Uses a fresh API (a quantizer starts empty)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from modelguard.metrics import accuracy, distortion
from modelguard.dataset.loading import labels_of
from modelguard.stages.common import load_data, loader_of
from modelguard.stages.defended import build_api


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    api = build_api(cfg, data)
    released, clean = api.query_all(data.victim_test, int(cfg.attack.query_batch_size), loader=loader_of(cfg))
    y_test = labels_of(data.victim_test)
    stats = distortion(clean, released)
    metrics = {"defense/protected_acc": accuracy(released, y_test),
               "defense/clean_acc": accuracy(clean, y_test),
               "defense/top1_kept": (released.argmax(1) == clean.argmax(1)).double().mean().item()}
    metrics.update({f"defense/{k}": v for k, v in stats.items()})
    return metrics
