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


#: Half-precision inputs are released as float32: a 1e-4 top-1 margin or an L1 budget cannot
#: survive rounding to float16/bfloat16 (their spacing near 0.5 is 5e-4 and 4e-3), so every
#: defense computes in float64 and returns float32 for them (docs/decisions.md, "Precision").
HALF_DTYPES = (torch.float16, torch.bfloat16)


def release_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a defense releases for inputs of ``dtype``: float32 for half precision,
    otherwise the input's own dtype."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a valid probability row of ``dtype`` may sum.

    A row rounded to ``dtype`` entry by entry has a sum off by at most one unit roundoff
    (the entries' relative errors add up to at most u·Σ y = u); a softmax computed in that
    dtype adds a few more. 8 machine epsilons covers both with room (float16 7.8e-3,
    bfloat16 6.3e-2); float32 and float64 get a floor of 1e-5, because float64 rows often
    come from float32 softmax outputs (sums off by ~2e-7) and stay that far off.
    """
    return max(1e-5, 8.0 * torch.finfo(dtype).eps)


def check_probs(probs: torch.Tensor) -> None:
    """Refuse anything that is not a [B, K] batch of probability vectors.

    Valid rows have K ≥ 1 finite, non-negative entries summing to 1 within
    :func:`sum_tolerance` of the dtype (float32 softmax rows sum to 1 only within ~2e-7, and
    are valid). Raises ValueError naming the first bad row and what is wrong with it.
    Costs two reductions over the batch.
    """
    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(
            f"a defense takes a floating [batch, classes] tensor of probabilities, got shape "
            f"{tuple(probs.shape)} and dtype {probs.dtype}; add a batch dimension with probs[None] "
            "for a single vector"
        )
    if probs.shape[1] == 0:
        raise ValueError(f"a defense needs rows with at least one class, got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        return
    tol = sum_tolerance(probs.dtype)
    sums = probs.sum(1, dtype=torch.float64)
    low = probs.amin(1)
    # NaN fails both comparisons, inf makes the sum inf or NaN: all land in ``bad``
    bad = ~(((sums - 1.0).abs() <= tol) & (low >= 0))
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0, 0])
    row = probs[i].detach().to(torch.float64)
    if not bool(torch.isfinite(row).all()):
        j = int((~torch.isfinite(row)).nonzero()[0, 0])
        what = f"has a non-finite entry {float(row[j])} at class {j}"
    elif bool((row < 0).any()):
        j = int(row.argmin())
        what = f"has a negative entry {float(row[j]):.6g} at class {j}"
    else:
        what = f"sums to {float(sums[i]):.9g}, not 1 (allowed: within {tol:.3g} for {probs.dtype})"
    raise ValueError(
        f"a defense takes probability vectors, but row {i} of {probs.shape[0]} {what}; pass "
        "softmax outputs (torch.softmax(logits, 1)), not logits or unnormalised scores"
    )
