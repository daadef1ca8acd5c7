"""Train-time augmentation of pixel-space images (random crop with padding 4; spec attacks §1.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_view(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random shifted crop of each image (zero padding), batched; horizontal flips are left out
    because they change the meaning of digits and letters."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
