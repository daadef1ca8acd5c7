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

import math

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

    def original_jbda_eps(self) -> float | None:
        """The eps the original handed its JBDA-TR attacker along with this defense, or None.

        The original passed MAD's and ModelGuard-W's ``epsilon`` as a keyword argument that
        its JBDA-TR also read as its own PGD radius (spec attacks §12.1); those two classes
        return their eps, every other defense None (random noise's was ``epsilon_z``)."""
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


def check_probs(probs: torch.Tensor, who: str = "a defense") -> None:
    """Refuse anything that is not a [B, K] batch of probability vectors.

    Valid rows have K ≥ 1 finite, non-negative entries summing to 1 within
    :func:`sum_tolerance` of the dtype (float32 softmax rows sum to 1 only within ~2e-7, and
    are valid). Raises ValueError naming the first bad row and what is wrong with it;
    ``who`` names the caller in the message ("a defense", "ModelGuardS"). A valid batch
    costs three reductions (a row sum, its min and max, the batch minimum).
    """
    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(
            f"{who} takes a floating [batch, classes] tensor of probabilities, got shape "
            f"{tuple(probs.shape)} and dtype {probs.dtype}; add a batch dimension with probs[None] "
            "for a single vector"
        )
    if probs.shape[1] == 0:
        raise ValueError(f"{who} needs rows with at least one class, got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        return
    tol = sum_tolerance(probs.dtype)
    # Fast path (three reductions, no per-row masks: the ModelGuard-S hot path calls this
    # for every batch). Row sums are accumulated in float32 (float64 for float64 rows),
    # whose cascade summation errs by at most about log2(K)·eps; a batch is accepted here
    # only with that much room left inside the tolerance, so it accepts nothing the
    # float64 check below would refuse. NaN propagates through the reductions and fails
    # every comparison, inf makes a sum inf or NaN.
    acc = torch.float64 if probs.dtype == torch.float64 else torch.float32
    room = tol - (math.ceil(math.log2(probs.shape[1] + 1)) + 2) * torch.finfo(acc).eps
    lo, hi = torch.aminmax(probs.sum(1, dtype=acc))
    if float(lo) >= 1.0 - room and float(hi) <= 1.0 + room and float(probs.amin()) >= 0:
        return
    # the exact check, row by row, and the diagnosis of the first bad row
    sums = probs.sum(1, dtype=torch.float64)
    low = probs.amin(1)
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
        f"{who} takes probability vectors, but row {i} of {probs.shape[0]} {what}; pass "
        "softmax outputs (torch.softmax(logits, 1)), not logits or unnormalised scores"
    )


def strict_top1(out: torch.Tensor, exact: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """``out`` (``exact`` rounded to the release dtype) with the top-1 class kept strictly first.

    ``exact`` is a defense's answer as computed (float64), ``top`` the class it must keep
    (default: ``exact``'s first maximum). Rounding to float32 can merge the top entry with
    the next one (entries 1e-8 apart both round to the same float32), and argmax then
    returns the lower index: a label flip when that index is not the top class. In every
    row where ``exact`` has ``top`` strictly first but ``out`` does not, ``out[top]`` is
    raised to the next representable value above the row's largest other entry: one ulp
    above the rounded value, so the entry stays within 1.5 ulp of ``exact`` and the row's
    sum moves by one ulp. Rows that are tied in ``exact`` are left as they are (argmax keeps
    the first of the tied classes). In place on ``out``; returns it. Needs K ≥ 2 to act.
    """
    if out.shape[0] == 0 or out.shape[1] < 2:
        return out
    if top is None:
        top = exact.argmax(1)
    idx = top[:, None]
    lo = torch.tensor(float("-inf"), dtype=exact.dtype, device=exact.device)
    strict = exact.gather(1, idx).squeeze(1) > exact.scatter(1, idx, lo.expand_as(idx)).amax(1)
    others = out.scatter(1, idx, lo.to(out.dtype).expand_as(idx)).amax(1)
    bad = strict & (out.gather(1, idx).squeeze(1) <= others)
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(1)
        up = torch.nextafter(others[rows], torch.full_like(others[rows], float("inf")))
        out[rows, top[rows]] = up
    return out
