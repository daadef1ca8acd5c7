"""The contract every defense follows.

A defense maps the victim's clean probability vectors ``probs`` ([B, K], rows on the
simplex) to the vectors the prediction API releases. It never calls the victim itself.

- ``perturb(probs, xinfo=None)`` is the online form the defended API uses.
- ``simulate(probs, xinfo=None)`` is the offline form an adaptive attacker uses to build a
  recovery table (``get_yprime`` in the spec). For a deterministic, stateless defense it
  is ``perturb``; stochastic defenses draw fresh randomness.
- ``xinfo(x)`` is per-input side information the perturbation needs (the MAD proxy's
  posterior, the AM misinformation model's posterior); ``None`` for all others.
  ``requires_xinfo`` says whether ``perturb`` needs it.
- ``top1_preserve`` says whether ``argmax(perturb(p)) == argmax(p)`` is promised.
"""
from __future__ import annotations

import torch


class Defense:
    requires_xinfo: bool = False
    top1_preserve: bool = True

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def simulate(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(probs, xinfo)

    def xinfo(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def to(self, device: torch.device | str) -> "Defense":
        """Move any side model to ``device``; stateless defenses have nothing to move."""
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def check_probs(probs: torch.Tensor) -> None:
    """Raise a clear error when ``probs`` is not a [B, K] floating batch."""
    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(
            f"a defense takes a floating [batch, classes] tensor of probabilities, got shape "
            f"{tuple(probs.shape)} and dtype {probs.dtype}; add a batch dimension with probs[None] "
            "for a single vector"
        )
