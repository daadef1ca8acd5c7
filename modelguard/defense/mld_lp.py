"""The reference solver of the ModelGuard-W LP: PuLP + CBC, exactly the formulation of spec §6.2.

Per row, with c_j = log(y_j + δ) and m = argmax y (first max):

    minimise Σ_j c_j y'_j   s.t.  y' ∈ simplex,  ‖y' − y‖_1 ≤ ε,  y'_m − y'_j ≥ μ  (j ≠ m),

one model per row, or one model for the whole batch with a shared budget (the original's
``batch_constraint=1``). Slow (one CBC process per model); the exact batched solver
:func:`~modelguard.defense.mld_solver.solve_mld` is what the grid runs, and the tests check
it against this one.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from modelguard.defense.base import release_dtype
from modelguard.defense.mld_solver import _check_args, simplex_rows
from modelguard.utils.checks import check_number

__all__ = ["solve_mld_lp"]


def solve_mld_lp(probs: torch.Tensor, eps, margin: float = 1e-4, log_delta: float = 1e-6,
                 batch_constraint: bool = False):
    """The ModelGuard-W LP exactly as in spec §6.2, solved by CBC through PuLP.

    One model per row (``batch_constraint=False``) or one model for the batch with the
    shared budget Σ_ij z_ij ≤ eps (``batch_constraint=True``; eps must then be a float).
    Returns ``(released, objective)`` like :func:`solve_mld`; the objective is Σ_j c_j y'_j
    per row at CBC's solution.

    The costs are computed in float64. The original computed them in float32, where every
    y below about 1e-13 gets exactly the same cost, so its LPs are more often degenerate and
    CBC then returns an arbitrary optimal vertex (spec §6.6, §12.1); the optimal value is
    unaffected beyond float32 rounding of c.
    """
    import pulp

    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(f"solve_mld_lp takes a floating [batch, classes] tensor, got {tuple(probs.shape)} {probs.dtype}")
    B, K = probs.shape
    y_t, m_t = simplex_rows(probs)
    y, m = y_t.cpu().numpy(), m_t.cpu().numpy()
    if batch_constraint:
        eps = check_number(eps, "eps", low=0, note="one float for the whole batch with batch_constraint=True",
                           fix="pass e.g. eps=1.0")
        e_rows = None
    else:
        e_rows = _check_args(probs, eps, margin, log_delta).cpu().numpy()
    c = np.log(y + log_delta)

    def build(prob, rows):
        yv, zv = {}, {}
        new_var = getattr(prob, "add_variable", None) or pulp.LpVariable  # PuLP ≥ 3.3 / older
        for i in rows:
            for jj in range(K):
                yv[i, jj] = new_var(f"y_{i}_{jj}", 0.0, 1.0)
                zv[i, jj] = new_var(f"z_{i}_{jj}", 0.0)
        prob += pulp.lpSum(float(c[i, jj]) * yv[i, jj] for i in rows for jj in range(K))
        for i in rows:
            prob += pulp.lpSum(yv[i, jj] for jj in range(K)) == 1.0
            for jj in range(K):
                prob += zv[i, jj] >= yv[i, jj] - float(y[i, jj])
                prob += zv[i, jj] >= float(y[i, jj]) - yv[i, jj]
                if jj != m[i]:
                    prob += yv[i, m[i]] - yv[i, jj] >= margin
            if not batch_constraint:
                prob += pulp.lpSum(zv[i, jj] for jj in range(K)) <= float(e_rows[i])
        if batch_constraint:
            prob += pulp.lpSum(zv[i, jj] for i in rows for jj in range(K)) <= float(eps)
        return yv

    out = np.zeros_like(y)
    with warnings.catch_warnings():  # PuLP 3.3 flags PULP_CBC_CMD for removal in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False)
    groups = [list(range(B))] if batch_constraint else [[i] for i in range(B)]
    for rows in groups:
        prob = pulp.LpProblem("mld", pulp.LpMinimize)
        yv = build(prob, rows)
        status = prob.solve(solver)
        if pulp.LpStatus[status] != "Optimal":
            raise RuntimeError(f"CBC did not solve the ModelGuard-W LP (status {pulp.LpStatus[status]}) for rows {rows[:3]}...")
        for i in rows:
            for jj in range(K):
                out[i, jj] = yv[i, jj].varValue
    obj = torch.from_numpy((c * out).sum(axis=1))
    released = torch.from_numpy(out).to(dtype=release_dtype(probs.dtype), device=probs.device)
    return released, obj.to(probs.device)
