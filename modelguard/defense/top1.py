"""Top-1 defense: release only the one-hot label of the victim's argmax (spec §1.4, topk 1, rounding 0)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype


class Top1(Defense):
    """One-hot of ``argmax(probs)``; ties go to the lowest index (spec §0).

    The output is on the simplex and keeps the label by construction, so
    ``top1_preserve`` is True. Deterministic and stateless: ``simulate == perturb``.
    Released in ``release_dtype`` (float32 for half-precision inputs).
    """

    requires_xinfo = False
    top1_preserve = True

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        out = torch.zeros(probs.shape, dtype=release_dtype(probs.dtype), device=probs.device)
        # torch.argmax returns the first maximum, as the spec requires.
        out.scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
        return out
