"""Train-time views of a dataset family, batched, on pixel-space images (spec attacks §1.2).

Each dataset option names the train transform of its query pool's family
(``ExperimentData.pool_train_transform``); the smoothing attack queries through it, as the
original's ``train_transform=1`` does (spec attacks §8.1 step 2). A view is a function
``(images [N, C, H, W] in [0, 1], generator) -> images of the same shape``.

- ``none``: the identity. The original's MNIST family trains without augmentation, so this
  is the view of the embedded MNIST / Fashion-MNIST data.
- ``shift``: random shifted crop with zero padding 4 (``RandomCrop(size, padding=4)``).
- ``shift_flip``: ``shift`` then a random horizontal flip, as the original's cifar and
  tinyimagenet families (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

View = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

POOL_TRANSFORMS = ("none", "shift", "shift_flip")


def identity_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def shift_view(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random shifted crop of each image (zero padding ``padding``), batched."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def shift_flip_view(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """``shift_view``, then each image mirrored left-right with probability 1/2."""
    shifted = shift_view(x, generator, padding)
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), shifted.flip(-1), shifted)


_VIEWS: dict[str, View] = {"none": identity_view, "shift": shift_view, "shift_flip": shift_flip_view}


def check_pool_transform(name: str, knob: str = "dataset.pool_train_transform") -> str:
    if name not in POOL_TRANSFORMS:
        raise ValueError(f"{knob}={name!r} is invalid: allowed values are {', '.join(POOL_TRANSFORMS)}; "
                         f"set {knob}=none for the MNIST family (no augmentation, as the original) or "
                         f"{knob}=shift_flip for a CIFAR-like family")
    return name


def pool_view(name: str) -> View:
    """The view called ``name`` (one of POOL_TRANSFORMS)."""
    return _VIEWS[check_pool_transform(name)]
