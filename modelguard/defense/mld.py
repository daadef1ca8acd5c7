"""ModelGuard-W (strategy ``mld``): the argmax-preserving, cross-entropy-maximising LP (spec §6)."""
from __future__ import annotations

import torch

from modelguard.defense.base import Defense, check_probs
from modelguard.defense.mld_lp import solve_mld_lp
from modelguard.defense.mld_solver import solve_mld
from modelguard.utils.checks import check_number

_BUDGETS = ("per_sample", "batch")
_BACKENDS = ("exact", "lp")


class ModelGuardW(Defense):
    """Release the y' that maximises −Σ_j y'_j log(y_j + δ) within ‖y' − y‖_1 ≤ ε, keeping
    the top-1 class ahead of every other by ``margin`` (spec §6.2).

    - ``budget="per_sample"`` (the grid setting): every row has its own L1 budget ε.
      ``backend="exact"`` solves it exactly and batched in torch (:func:`solve_mld`);
      ``backend="lp"`` builds the LP with PuLP and solves it with CBC, row by row.
    - ``budget="batch"``: one budget ε shared by the whole query batch (the original's
      ``batch_constraint=1``; spec §6.5, §12.2). Only the LP backend solves it.

    Deterministic and stateless, so ``simulate == perturb`` (spec §1.1). Defender and
    simulated attacker must use the same backend: on degenerate rows (equal costs) the exact
    solver follows the fixed tie rule of spec §6.6 while CBC returns an arbitrary optimal
    vertex (spec §12.1). The last batch's per-row objective is kept in ``last_objective``.
    The LP uses the L1 ball only; the original's ``ydist`` affected only its warnings (§12.3).
    """

    requires_xinfo = False
    top1_preserve = True

    def __init__(self, eps: float = 1.0, budget: str = "per_sample", backend: str = "exact",
                 margin: float = 1e-4, log_delta: float = 1e-6):
        eps = check_number(eps, "defense.eps", low=0, low_open=True,
                           note="the L1 budget; the grid uses 1.0", fix="set defense.eps=1.0")
        if budget not in _BUDGETS:
            raise ValueError(
                f"defense.budget={budget!r} is invalid: allowed values are {', '.join(_BUDGETS)}; "
                "set defense.budget=per_sample (the grid setting)"
            )
        if backend not in _BACKENDS:
            raise ValueError(
                f"defense.backend={backend!r} is invalid: allowed values are {', '.join(_BACKENDS)}; "
                "set defense.backend=exact (fast, exact) or defense.backend=lp (PuLP + CBC)"
            )
        if budget == "batch" and backend != "lp":
            raise ValueError(
                f"defense.budget=batch needs the LP backend (got defense.backend={backend}): the "
                "exact solver handles only per-sample budgets; set defense.backend=lp, or use "
                "defense.budget=per_sample"
            )
        self.eps = eps
        self.budget = budget
        self.backend = backend
        self.margin = check_number(margin, "defense.margin", low=0,
                                   fix="set defense.margin=1e-4 (the original's value)")
        self.log_delta = check_number(log_delta, "defense.log_delta", low=0, low_open=True,
                                      fix="set defense.log_delta=1e-6 (the original's value)")
        self.last_objective: torch.Tensor | None = None

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        K = probs.shape[1]
        if self.budget == "per_sample":
            emin = 2.0 * (K - 1) * self.margin / K
            if self.eps < emin:
                raise ValueError(
                    f"defense.eps={self.eps} is too small for {K} classes: the LP needs eps ≥ "
                    f"2(K−1)·margin/K = {emin:.6g}; raise defense.eps or lower defense.margin"
                )
        if self.backend == "exact":
            out, obj = solve_mld(probs, self.eps, self.margin, self.log_delta)
        else:
            out, obj = solve_mld_lp(probs, self.eps, self.margin, self.log_delta,
                                    batch_constraint=self.budget == "batch")
        self.last_objective = obj
        return out

    def original_jbda_eps(self) -> float | None:
        return float(self.eps)

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, budget={self.budget!r}, backend={self.backend!r}, "
                f"margin={self.margin}, log_delta={self.log_delta}")
