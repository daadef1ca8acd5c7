"""The transfer set artifact (``transfer.pt`` in the run directory): written by the query stage,
read by the substitute stage. Pool images are stored by index, synthetic ones (JBDA-TR) as
float16 images."""
from __future__ import annotations

from pathlib import Path

import torch

from modelguard.policy.base import QueryLog
from modelguard.utils.io import UnreadableArtifact, load_tensors, save_tensors


def save_transfer(path: Path, log: QueryLog, labels: torch.Tensor) -> None:
    transfer = {"pool_index": log.pool_index, "labels": labels.float(), "released": log.released.float(),
                "clean": log.clean.float()}
    if (log.pool_index < 0).any():
        transfer["inputs"] = log.inputs[log.pool_index < 0].half()
    save_tensors(transfer, path)


def load_transfer(path: Path, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a saved transfer set; the images in order, pool ones by index."""
    if not path.exists():
        raise FileNotFoundError(f"no transfer set at {path}; run the query stage first")
    try:
        transfer = load_tensors(path)
    except UnreadableArtifact as err:
        raise UnreadableArtifact(err.path, f"{err.problem}; run the query stage again to rewrite it "
                                 "(stages=[query,substitute], or fresh=true)") from None
    return load_transfer_inputs(transfer, pool), transfer["labels"]


def load_transfer_inputs(transfer: dict[str, torch.Tensor], pool: torch.Tensor) -> torch.Tensor:
    """Images of a saved transfer set, in order: pool images by index, synthetic ones stored."""
    index = transfer["pool_index"]
    inputs = torch.empty((len(index), *pool.shape[1:]), dtype=pool.dtype)
    inputs[index >= 0] = pool[index[index >= 0]]
    if (index < 0).any():
        inputs[index < 0] = transfer["inputs"].to(pool.dtype)
    return inputs
