"""No defense: the API releases the victim's clean probabilities (spec §1.4, "none")."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype


class NoDefense(Defense):
    """The identity. Returns a copy, so a caller that edits the answer in place cannot
    change the clean posteriors it was computed from; half precision is released as
    float32 (the same values, exactly)."""

    requires_xinfo = False
    top1_preserve = True

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        return probs.to(release_dtype(probs.dtype), copy=True)
