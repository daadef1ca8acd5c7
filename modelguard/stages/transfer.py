"""The transfer set artifact (``transfer.pt`` in the run directory): written by the query stage,
read by the substitute stage. Pool images are stored by index, synthetic ones (JBDA-TR) as
float16 images."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from modelguard.dataset.loading import transfer_images
from modelguard.policy.base import QueryLog
from modelguard.utils.io import UnreadableArtifact, load_tensors, save_tensors


def save_transfer(path: Path, log: QueryLog, labels: torch.Tensor) -> None:
    transfer = {"pool_index": log.pool_index, "labels": labels.float(), "released": log.released.float(),
                "clean": log.clean.float()}
    if (log.pool_index < 0).any():
        transfer["inputs"] = log.inputs[log.pool_index < 0].half()
    save_tensors(transfer, path)


def load_transfer(path: Path, pool: Dataset) -> Dataset:
    """A saved transfer set as a dataset of (image, label): pool images by index, synthetic ones
    stored (``dataset.loading.transfer_images``)."""
    if not path.exists():
        raise FileNotFoundError(f"no transfer set at {path}; run the query stage first")
    try:
        transfer = load_tensors(path)
    except UnreadableArtifact as err:
        raise UnreadableArtifact(err.path, f"{err.problem}; run the query stage again to rewrite it "
                                 "(stages=[query,substitute], or fresh=true)") from None
    return transfer_images(pool, transfer["pool_index"], transfer.get("inputs"), transfer["labels"])
