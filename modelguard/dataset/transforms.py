"""Train-time views of a dataset family, batched, on pixel-space images (spec attacks §1.2).

Each dataset option carries the train transform of its query pool's family
(``dataset.pool_train_view``, a node naming one of the classes below); the smoothing attack
queries through it, as the original's ``train_transform=1`` does (spec attacks §8.1 step 2),
unless ``attack.augment`` names another. A view is a callable
``(images [N, C, H, W] in [0, 1], generator) -> images of the same shape``.

- ``IdentityView``: the original's MNIST family trains without augmentation, so this is the
  view of the embedded MNIST / Fashion-MNIST data.
- ``ShiftView``: random shifted crop with zero padding 4 (``RandomCrop(size, padding=4)``).
- ``ShiftFlipView``: a shift, then a random horizontal flip, as the original's cifar and
  tinyimagenet families (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``).

The ``view`` config group (conf/view/) names them for the command line:
``+view@attack.augment=shift``, ``+view@dataset.pool_train_view=shift_flip``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from modelguard.utils.checks import check_number

View = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

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


class IdentityView:
    """The image as it is."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return identity_view(x, generator)

    def __repr__(self) -> str:
        return "IdentityView()"


class ShiftView:
    """``shift_view`` with ``padding`` pixels of zero padding."""

    def __init__(self, padding: int = 4):
        self.padding = check_number(padding, "view.padding", integer=True, low=0,
                                    fix="set the view's padding to 4 (RandomCrop's padding)")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return shift_view(x, generator, self.padding)

    def __repr__(self) -> str:
        return f"ShiftView(padding={self.padding})"


class ShiftFlipView(ShiftView):
    """``shift_flip_view`` with ``padding`` pixels of zero padding."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return shift_flip_view(x, generator, self.padding)

    def __repr__(self) -> str:
        return f"ShiftFlipView(padding={self.padding})"


def check_view(view, knob: str) -> View:
    """``view`` if it is a callable view, else a ValueError naming ``knob`` and the choices."""
    if not callable(view):
        raise ValueError(f"{knob}={view!r} is invalid: it must be a node naming a view class "
                         "(modelguard.dataset.transforms.IdentityView, ShiftView or ShiftFlipView); "
                         f"on the command line: +view@{knob}=identity|shift|shift_flip")
    return view
