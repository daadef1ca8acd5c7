"""Reverse Sigmoid (Lee et al.): subtract a sigmoid-shaped term from each probability (spec §2)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs, release_dtype, strict_top1
from modelguard.utils.checks import check_number


class ReverseSigmoid(Defense):
    """``y'_j ∝ y_j − β·(σ(γ·logit(y_j)) − 1/2)``, renormalised per row.

    ``σ(γ·logit(p))`` is evaluated as ``p^γ / (p^γ + (1−p)^γ)``, which is finite at p = 0
    and p = 1 (it gives 0 and 1 there), in float64; only for γ so large that both powers
    underflow does it fall back to ``σ(γ·logit p)``. Defaults are the CIFAR10 grid values
    (β = 0.21, γ = 0.2; spec §11).

    β must be < 1: then every unnormalised entry is positive (for p ≤ 1/2, s ≤ 1/2 and the
    entry is at least p; for p > 1/2 it is at least p − β/2 > 0), so the output is on the
    simplex. For β ≥ 1 an entry can go negative and the released vector leaves the simplex
    (the original does not clip, ART clips to [0, 1]); rather than release such vectors, or
    depart from the formula by clipping, the constructor refuses β ≥ 1. The paper's grid uses
    β ≤ 0.21.

    ``top1_preserve`` is derived, not assumed (spec §2, §12.8). With ``g(p) = p − β(s(p) −
    1/2)`` and ``s(p) = σ(γ·logit p)``, the label is kept for every input iff g is strictly
    increasing on [0, 1]:

    - γ < 1 and β > 0: ``s'(p) → ∞`` as p → 0, so g *decreases* near 0: a class at 0.001
      ends above one at 0.004 (β = 0.21, γ = 0.2), and with many small classes the label
      flips. This covers the whole grid (γ = 0.2): the flag is **False**.
    - γ ≥ 1: ``s'(p) = γ·cosh²(t/2)/cosh²(γt/2)`` with t = logit p is at most γ (at p = 1/2),
      so g is strictly increasing iff β·γ < 1: the flag is True.
    - β = 0 or γ = 0: the identity (s ≡ 1/2 when γ = 0): True.

    Released in ``release_dtype`` (float32 for half precision). Where the flag is True, a
    top class the float64 answer has strictly first stays strictly first after rounding to
    that dtype (:func:`~modelguard.defense.base.strict_top1`).

    Deterministic and stateless: ``simulate == perturb``.
    """

    requires_xinfo = False

    def __init__(self, beta: float = 0.21, gamma: float = 0.2):
        self.beta = check_number(beta, "defense.beta", low=0, high=1, high_open=True,
                                 note="for β ≥ 1 released vectors leave the simplex; the paper's grid: 0.008 to 0.21",
                                 fix="set defense.beta=0.21")
        self.gamma = check_number(gamma, "defense.gamma", low=0, fix="set defense.gamma=0.2")
        self.top1_preserve = self.beta == 0.0 or self.gamma == 0.0 or (
            self.gamma >= 1.0 and self.beta * self.gamma < 1.0
        )

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        p = probs.to(torch.float64)
        pc = p.clamp(0.0, 1.0)  # guards fractional powers against -1e-17 style round-off
        a = pc.pow(self.gamma)
        b = (1.0 - pc).pow(self.gamma)
        ab = a + b
        s = a / ab  # σ(γ·logit p); a + b ≥ 1 for γ ≤ 1
        if self.gamma > 1.0:
            # for very large γ both powers can underflow to 0 (0/0); the logit form is
            # finite there (γ > 0, logit = ±inf at the ends gives s = 0 or 1)
            logit = torch.log(pc) - torch.log1p(-pc)
            s = torch.where(ab > 0, s, torch.sigmoid(self.gamma * logit))
        ytil = p - self.beta * (s - 0.5)
        exact = ytil / ytil.sum(dim=1, keepdim=True)
        out = exact.to(release_dtype(probs.dtype))
        if self.top1_preserve and out.dtype != exact.dtype:
            # a strictly increasing g keeps a strict top strictly first in float64, but the
            # float32 rounding can merge it with a class 1 ulp below (a label flip if lower)
            strict_top1(out, exact)
        return out

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}"
