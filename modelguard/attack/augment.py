"""The views an attacker queries when it augments its queries (smoothing, spec attacks §8.1).

``attack.augment`` chooses the view: ``dataset`` (the default, as the original) is the query
pool family's train transform, a property of the dataset option
(``ExperimentData.pool_train_view()``: the identity for the embedded MNIST family); ``none``,
``shift`` (random ±4 px shifts, the project's former smoothing view) and ``shift_flip``
name a view directly, whatever the dataset.
"""
from __future__ import annotations

import torch

from modelguard.dataset.transforms import POOL_TRANSFORMS, View, pool_view, shift_view

AUGMENTS = ("dataset",) + POOL_TRANSFORMS


def random_view(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random shifted crop of each image (zero padding), batched; horizontal flips are left out
    because they change the meaning of digits and letters."""
    return shift_view(x, generator, padding)


def check_augment(augment: str) -> str:
    if augment not in AUGMENTS:
        raise ValueError(f"attack.augment={augment!r} is invalid: allowed values are {', '.join(AUGMENTS)}; "
                         "set attack.augment=dataset (the query pool family's train transform, as the "
                         "original) or attack.augment=shift (random ±4 px shifts)")
    return augment


def query_view(augment: str, dataset_view: View | None) -> View:
    """The view for ``attack.augment``; ``dataset_view`` is the dataset's train view."""
    if check_augment(augment) != "dataset":
        return pool_view(augment)
    if dataset_view is None:
        raise ValueError("attack.augment=dataset needs the query pool's train view: pass "
                         "dataset_view=data.pool_train_view(), or name a view with attack.augment=shift")
    return dataset_view
