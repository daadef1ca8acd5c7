"""Rounding defense: round every probability to a few decimals (spec §1.4, `rounding`)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype
from modelguard.utils.checks import check_number


class Rounding(Defense):
    """Round each entry to ``decimals`` decimals, half to even, **without renormalising**.

    Exceptions to the usual contract, both inherited from the original (spec §1.4, §12.8):

    - **Not on the simplex.** Each entry moves by up to half a unit of the last decimal,
      so a row's sum drifts from 1, and a flat row can round to all zeros (K = 256, one
      decimal: every 1/256 becomes 0.0, and argmax of the zero row is class 0).
    - **The label can change.** Rounding merges near-equal top entries into a tie, and
      argmax then returns the lowest tied index: ``[0.41, 0.44, 0.15] → [0.4, 0.4, 0.2]``
      moves the argmax from class 1 to class 0. The original claims the label is kept;
      we do not: ``top1_preserve`` is **False**, so recovery never restricts its lookup
      on a promise this defense cannot keep.

    The rounding runs in the release dtype (the input's own dtype, float32 for half
    precision), as numpy's ``round`` does on the original's float32 arrays: a value such as
    float32 0.35 (really 0.3499999940...) rounds to 0.4 in float32 arithmetic but to 0.3 in
    float64, and we match the former. Half-precision inputs are widened first (exactly):
    ``10·x`` in float16 is itself rounded to 11 bits and can cross a rounding boundary.
    Deterministic and stateless: ``simulate == perturb``.
    """

    requires_xinfo = False
    top1_preserve = False

    def __init__(self, decimals: int = 1):
        self.decimals = check_number(decimals, "defense.decimals", low=0, integer=True,
                                     note="the number of decimals kept", fix="set defense.decimals=1")

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        # torch.round(decimals=d) scales by 10^d, rounds half to even and scales back, in
        # the input dtype: the same arithmetic as numpy.round.
        return torch.round(probs.to(release_dtype(probs.dtype)), decimals=self.decimals)

    def extra_repr(self) -> str:
        return f"decimals={self.decimals}"
