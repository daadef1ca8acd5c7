"""S4L self-supervision (spec attacks §8.3): a rotation-prediction loss on unlabeled pool
images, added to the substitute's soft cross-entropy with weight ``attack.rotation_weight``."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, take
from modelguard.engine import soft_cross_entropy

ROTATIONS = 4


def rotation_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predict which of 0/90/180/270 degree rotations was applied (``model.rotation_head``)."""
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return F.cross_entropy(model.rotation_head(model.features(views)), targets)


def substitute_loss(model: torch.nn.Module, rotation_weight: float, pool: Dataset,
                    generator: torch.Generator, loader: LoaderSettings = IN_PROCESS
                    ) -> Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The substitute's loss: soft cross-entropy, plus the rotation loss on a batch of random pool
    images when ``rotation_weight > 0`` (then ``model`` gets a ``rotation_head``)."""
    if rotation_weight <= 0:
        return lambda m, x, y: soft_cross_entropy(m(x), y)
    model.rotation_head = torch.nn.Linear(model.feature_dim, ROTATIONS)

    def loss(m, x, y):
        unlabeled = take(pool, torch.randint(len(pool), (len(x),), generator=generator), loader).to(x.device)
        return soft_cross_entropy(m(x), y) + rotation_weight * rotation_loss(m, unlabeled)

    return loss
