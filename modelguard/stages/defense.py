"""Stage `defense`: the defended victim's utility on the victim's test set (spec defenses §8.2).

Protected accuracy = top-1 accuracy of the released vectors; distortion = per-sample L1, L2
and KL between clean and released vectors. Uses a fresh API (a quantizer starts empty)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from modelguard.metrics import accuracy, distortion
from modelguard.stages.common import load_data
from modelguard.stages.defended import build_api


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    api = build_api(cfg, data)
    x_test, y_test = data.victim_test.tensors
    released, clean = api.query_all(x_test, int(cfg.attack.query_batch_size))
    stats = distortion(clean, released)
    metrics = {"defense/protected_acc": accuracy(released, y_test),
               "defense/clean_acc": accuracy(clean, y_test),
               "defense/top1_kept": (released.argmax(1) == clean.argmax(1)).double().mean().item()}
    metrics.update({f"defense/{k}": v for k, v in stats.items()})
    return metrics
