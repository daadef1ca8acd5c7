"""Stage `substitute`: train the attacker's copy on the transfer set and measure the damage.

Reports the final epoch's test accuracy and fidelity (agreement with the undefended victim on
the victim's test set) and, as the paper does, the best test accuracy over epochs (model
selection on the test set; spec attacks §12.12). ``substitute.select`` chooses the weights
kept (see ``stages/training.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from modelguard.stages.common import load_data, output_dir
from modelguard.stages.training import make_trainer
from modelguard.stages.transfer import load_transfer
from modelguard.utils.io import save_tensors


def run(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    transfer = load_transfer(output_dir(cfg) / "transfer.pt", data.query_pool)
    model, metrics = make_trainer(cfg, data)(transfer, "final")
    save_tensors(model.state_dict(), output_dir(cfg) / "substitute.pt")
    return metrics


def outputs(cfg: DictConfig) -> list[Path]:
    return [output_dir(cfg) / "substitute.pt"]
