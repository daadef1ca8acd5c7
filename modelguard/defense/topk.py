"""Top-k defense: keep the k largest probabilities and zero the rest (spec §1.4, `topk`)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype
from modelguard.utils.checks import check_number


class TopK(Defense):
    """Keep the ``k`` largest entries of each row and set the others to 0.

    - ``one_hot=False``: the kept entries keep their values. As in the original there is
      **no renormalisation**, so a row sums to less than 1 (spec §1.4, §12.8).
    - ``one_hot=True``: the kept entries are set to 1, a k-hot vector summing to k (the
      original's ``rounding=0``). With k = 1 this is :class:`~modelguard.defense.top1.Top1`.

    Among equal values the lower index is kept first (a stable descending sort), so the
    released argmax is the clean argmax whenever the kept values are unchanged:
    ``top1_preserve`` is True except for a k-hot output with k > 1, whose argmax is the
    lowest kept index rather than the most likely class. Half-precision inputs are
    released as float32 (the kept values exactly).
    """

    requires_xinfo = False

    def __init__(self, k: int = 1, one_hot: bool = False):
        k = check_number(k, "defense.k", low=1, integer=True, note="the number of classes kept",
                         fix="set defense.k=1")
        if not isinstance(one_hot, bool):
            raise ValueError(
                f"defense.one_hot={one_hot!r} is invalid: one_hot must be true or false; "
                "set defense.one_hot=false"
            )
        self.k = k
        self.one_hot = one_hot
        self.top1_preserve = not (one_hot and k > 1)

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        k = min(self.k, probs.shape[1])
        order = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
        out = torch.zeros(probs.shape, dtype=release_dtype(probs.dtype), device=probs.device)
        if self.one_hot:
            out.scatter_(1, order, 1.0)
        else:
            out.scatter_(1, order, probs.gather(1, order).to(out.dtype))
        return out

    def extra_repr(self) -> str:
        return f"k={self.k}, one_hot={self.one_hot}"
