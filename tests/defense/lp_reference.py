"""An independent reference for the ModelGuard-W LP: scipy's HiGHS on the formulation of spec
§6.2, one row at a time, at tight tolerances. Independent of both project backends (the exact
solver and PuLP/CBC): it shares no code with them, and renormalises the row itself."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

MU = 1e-4
DELTA = 1e-6


def highs_objective(row: torch.Tensor, eps: float, mu: float = MU, delta: float = DELTA) -> float:
    """Optimal Σ_j log(ŷ_j + δ)·y'_j of the per-sample LP for ``row`` renormalised in float64
    (ŷ = row / Σ row), top class = first max of ``row`` as given."""
    raw = row.detach().cpu().to(torch.float64).numpy()
    m = int(np.argmax(raw))
    y = raw / raw.sum()
    K = y.size
    c = np.concatenate([np.log(y + delta), np.zeros(K)])  # variables: y' (K), z (K)
    eye = sp.identity(K, format="csr")
    others = np.array([j for j in range(K) if j != m], dtype=np.int64)
    margin = sp.csr_matrix(
        (np.concatenate([np.ones(K - 1), -np.ones(K - 1)]),
         (np.concatenate([np.arange(K - 1), np.arange(K - 1)]), np.concatenate([others, np.full(K - 1, m)]))),
        shape=(K - 1, K),
    )
    A_ub = sp.vstack([
        sp.hstack([eye, -eye]),                      # y' − z ≤ y
        sp.hstack([-eye, -eye]),                     # −y' − z ≤ −y
        sp.hstack([sp.csr_matrix((1, K)), sp.csr_matrix(np.ones((1, K)))]),  # Σ z ≤ ε
        sp.hstack([margin, sp.csr_matrix((K - 1, K))]),  # y'_j − y'_m ≤ −μ
    ], format="csr")
    b_ub = np.concatenate([y, -y, [eps], np.full(K - 1, -mu)])
    A_eq = np.concatenate([np.ones(K), np.zeros(K)])[None]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0.0, 1.0)] * K + [(0.0, None)] * K, method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on a ModelGuard-W LP (K={K}, eps={eps}): {res.message}")
    return float(res.fun)
