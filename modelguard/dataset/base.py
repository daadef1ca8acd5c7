"""The data contract every `dataset` option follows.

An option bundles what one experiment needs: the victim's train and test splits (X_t), the
attacker's query pool (X_q) and the outlier-exposure set (X_OE). Each role is a map-style
``torch.utils.data.Dataset`` whose items are (image, label): a ``TensorDataset`` in memory
(the embedded and synthetic options) or a dataset that reads from disk, which then lists its
labels as ``targets`` so that they are known without decoding images. Stages read every role
through ``modelguard.dataset.loading``, batch by batch. Images are float tensors in pixel
space [0, 1], shape [C, H, W]; normalisation is part of the model (see
modelguard.arch), so an attacker perturbs images in pixel space (JBDA-TR maps to the
model's normalised space where it reproduces the original, spec attacks §12.2).

``pool_train_view`` is the train-time view of the query pool's family (see
modelguard.dataset.transforms); attacks that query "through the train transform" (smoothing)
use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from modelguard.dataset.transforms import IdentityView, View


@dataclass
class ExperimentData:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    victim_train: Dataset
    victim_test: Dataset
    query_pool: Dataset
    outliers: Dataset
    pool_train_view: View = field(default_factory=IdentityView)

    def describe(self) -> str:
        return (f"{self.name}: victim train {len(self.victim_train)}, test {len(self.victim_test)}, "
                f"query pool {len(self.query_pool)}, outliers {len(self.outliers)}, K={self.num_classes}")


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] or [N, H, W, C] -> float [N, C, H, W] in [0, 1]."""
    x = images.float().div_(255.0)
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous()
