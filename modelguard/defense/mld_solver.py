"""Exact solvers for the ModelGuard-W linear program (strategy ``mld``; spec §6).

Per row, with c_j = log(y_j + δ) and m = argmax y (first max), the LP of spec §6.2 is

    minimise Σ_j c_j y'_j   s.t.  y' ∈ simplex,  ‖y' − y‖_1 ≤ ε,  y'_m − y'_j ≥ μ  (j ≠ m).

Two backends:

- :func:`solve_mld` — exact, batched, torch (CPU or CUDA), float64 internally.
- :func:`solve_mld_lp` — the reference LP built with PuLP and solved by CBC, exactly the
  formulation of spec §6.2 (per row, or one batch-wide model with a shared budget).

How :func:`solve_mld` works (spec §6.4 gives the ingredients; the 1-D search is ours):

1. Sort the non-top classes by y (= by cost), descending, ties by class index (one sort per
   row), and take the exclusive prefix sums of s, of the sorted costs g and of g·s.
2. For a fixed top value T the inner problem is the greedy of spec §6.4 (drain the most
   expensive classes, fill the cheapest up to T − μ, stop at the budget or where the two
   pointers meet). Every quantity in it is written in closed form from the prefix sums and
   three indices (how many classes are above the cap, where the drain stops, where the fill
   stops), so one evaluation of V(T) costs two [B, K] compare-and-count passes, two
   searchsorted calls and some gathers (no cumsum per evaluation).
   The same pass carries the one-sided derivative dV/dT along (forward-mode, with the
   one-sided rule at kinks), i.e. the slope of the linear piece of V next to T.
3. V is convex and piecewise linear on [T_lo, T_hi] (closed-form ends, spec §6.4 step 3).
   If the right slope at T_lo is ≥ 0 the answer is T_lo (the closed-form "top cut"; most
   peaked rows stop here), if the left slope at T_hi is ≤ 0 it is T_hi. Otherwise we run the
   1-D cutting-plane (Kelley) method: intersect the supporting lines at the two bracket ends,
   evaluate there, and stop when V equals the lower bound given by the two lines. Each step
   adds the line of a new piece, so it ends after finitely many steps at an exact breakpoint
   (no golden-section search, no tolerance on T). Measured: ~80% of peaked rows stop at
   T_lo; the rest take 1–7 steps; flat Dirichlet(10) rows at K = 256 take 6–10.
4. Rebuild y' from the three indices at T*, scatter back to class order.

Tie rule (spec §6.6, §12.1): among equal costs the lower class index is drained first and
the higher index is filled first. The sort key keeps the top 44 mantissa bits of y (for
K ≤ 256; fewer for larger K) and puts the class index in the low bits, so classes whose
probabilities agree to ~6e-14 relative are treated as tied and ordered by index; this is
what makes the sort one fast pass of a plain (non-stable) float sort, and it changes the
objective by well under 1e-12.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

__all__ = ["solve_mld", "solve_mld_lp", "min_feasible_eps"]

_F64 = torch.float64
_KINK_TOL = 1e-12  # two branch values closer than this are treated as a kink (one-sided rule)
_STOP_TOL = 1e-12  # cutting plane stops when V(t) is within this of the lower bound
_MAX_CUTS = 60
_CHUNK = 8192  # rows per internal chunk (bounds memory; rows are independent)


def min_feasible_eps(num_classes: int, margin: float = 1e-4) -> float:
    """Smallest ε for which the per-sample LP is feasible for every input (spec §6.2)."""
    return 2.0 * (num_classes - 1) * margin / num_classes


def _check_args(probs: torch.Tensor, eps, margin: float, log_delta: float) -> torch.Tensor:
    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(
            f"solve_mld takes a floating [batch, classes] tensor of probabilities, got shape "
            f"{tuple(probs.shape)} and dtype {probs.dtype}; add a batch dimension with probs[None]"
        )
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin={margin!r} is invalid: it must be a finite number ≥ 0 (spec default 1e-4)")
    if not (isinstance(log_delta, (int, float)) and math.isfinite(log_delta) and log_delta > 0):
        raise ValueError(f"log_delta={log_delta!r} is invalid: it must be a finite number > 0 (spec default 1e-6)")
    B, K = probs.shape
    if torch.is_tensor(eps):
        e = eps.detach().to(device=probs.device, dtype=_F64).reshape(-1)
        if e.numel() == 1:
            e = e.expand(B)
        if e.numel() != B:
            raise ValueError(f"eps must be a float or a [batch] tensor; got {e.numel()} values for a batch of {B}")
    else:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise ValueError(f"eps={eps!r} is invalid: it must be a float or a [batch] tensor")
        e = torch.full((B,), float(eps), dtype=_F64, device=probs.device)
    if B == 0:
        return e
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"eps must be finite, got {eps!r}")
    emin = min_feasible_eps(K, margin)
    bad = e < emin
    if bool(bad.any()):
        raise ValueError(
            f"eps={float(e[bad][0])!r} is too small: with {K} classes and margin {margin} the "
            f"per-sample LP is infeasible for some inputs unless eps ≥ 2(K−1)·margin/K = {emin:.6g} "
            f"(spec §6.2); raise eps (e.g. defense.eps=1.0) or lower the margin"
        )
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs contains NaN or inf; the ModelGuard-W LP needs finite probabilities")
    return e


# ----------------------------------------------------------------------------------------
# small helpers on [R] tensors


def _dmax(a, da, b, db):
    """max(a, b) with its one-sided derivative (max of the derivatives at a kink)."""
    v = torch.maximum(a, b)
    d = torch.where(a > b, da, db)
    tie = (a - b).abs() <= _KINK_TOL
    return v, torch.where(tie, torch.maximum(da, db), d)


def _dmin(a, da, b, db):
    v = torch.minimum(a, b)
    d = torch.where(a < b, da, db)
    tie = (a - b).abs() <= _KINK_TOL
    return v, torch.where(tie, torch.minimum(da, db), d)


class _Rows:
    """Per-row data of the sorted problem, restricted to a set of rows ([R, 1] columns)."""

    __slots__ = ("s", "g", "sneg", "Sx", "SGG", "last", "ym", "cm", "eps", "n", "ar", "ar1")

    def select(self, idx: torch.Tensor) -> "_Rows":
        o = _Rows()
        for k in ("s", "g", "sneg", "Sx", "SGG", "last", "ym", "cm", "eps"):
            setattr(o, k, getattr(self, k).index_select(0, idx))
        o.n, o.ar, o.ar1 = self.n, self.ar, self.ar1
        return o


def _evaluate(R: _Rows, T: torch.Tensor, direction: float, mu: float):
    """V(T) and its directional derivative along ``direction`` (+1: right, −1: left).

    Also returns the structure needed to rebuild y' at T. Notation as in spec §6.4 with
    0-based sorted positions: the first f classes are above the cap U = T − μ, the drain
    takes D from the top of the list, the fill adds A at the bottom (cheapest first, up to U).
    With S, G, GS the exclusive prefix sums of s, g and g·s:
      P_i = min(i,f)·U + S_max(i,f) − S_f        (mass above position i after capping)
      Q_i = (n − max(i+1,f))·U − (S_n − S_max(i+1,f))   (free capacity below position i)
    Every branch (min/max, index choice) is taken on values; the derivative follows the branch,
    with the one-sided rule (max → larger slope, min → smaller) where two values tie.
    """
    n = R.n
    dT = direction
    SGG = R.SGG
    S = SGG[:, 0, :]

    def gat(idx):  # idx [R, k] → (S, G, GS) at idx, each [R, k]
        return SGG.gather(2, idx.unsqueeze(1).expand(-1, 3, -1)).unbind(1)

    Sn, Gn, GSn = R.last.unbind(1)
    Sn, Gn, GSn = Sn.unsqueeze(1), Gn.unsqueeze(1), GSn.unsqueeze(1)
    T = T.unsqueeze(1)
    U = T - mu
    f = torch.searchsorted(R.sneg, -U, right=direction < 0)  # classes strictly above the cap
    ff = f.to(_F64)
    Sf, Gf, GSf = gat(f)
    fU = ff * U
    F = Sf - fU  # forced cut
    M = 1.0 - T - (fU + Sn - Sf)
    dM = -dT * (1.0 + ff)
    x = T - R.ym
    d_abs = torch.where(x > _KINK_TOL, dT, torch.where(x < -_KINK_TOL, -dT, 1.0))  # |x|: +1 at 0
    bud = R.eps - x.abs() - F
    d_bud = ff * dT - d_abs
    zero = torch.zeros_like(T)
    lowD, d_lowD = _dmax(zero, zero, -M, -dM)
    budD = 0.5 * (bud - M)
    d_budD = 0.5 * (d_bud - dM)

    # --- meeting point D_meet = min_i max(P_i, Q_i − M): i* = first i with P_i ≥ Q_i − M ---
    Qf = (n - ff) * U - (Sn - Sf)  # Q_i for every i < f
    kappa = Qf - M
    i_cap = torch.ceil((kappa / U).clamp(min=0.0, max=float(n)))  # h(i) = iU − κ for i < f
    # for i ≥ f: h(i) ≥ 0 ⇔ (i+1)·U − s_i ≥ κ, and (i+1)·U − s_i increases strictly in i
    a_cnt = ((R.ar1 * U - R.s) < kappa).sum(1, keepdim=True)
    istar = torch.where(i_cap < ff, i_cap.long(), torch.maximum(a_cnt, f))
    i1 = istar.clamp(max=n - 1)
    i0 = (istar - 1).clamp(min=0)
    bp1, bq1 = torch.maximum(i1, f), torch.maximum(i1 + 1, f)
    bp0, bq0 = torch.maximum(i0, f), torch.maximum(i0 + 1, f)
    Sp1, Sq1, Sp0, Sq0 = S.gather(1, torch.cat([bp1, bq1, bp0, bq0], 1)).unbind(1)
    a1 = torch.minimum(i1, f).to(_F64)
    a0 = torch.minimum(i0, f).to(_F64)
    c1 = (n - bq1).to(_F64)
    c0 = (n - bq0).to(_F64)
    # E_i = max(P_i, Q_i − M) at i* and i* − 1; D_meet is the smaller (one-sided rule at kinks)
    E1, dE1 = _dmax(a1 * U + Sp1.unsqueeze(1) - Sf, a1 * dT,
                    c1 * U - (Sn - Sq1.unsqueeze(1)) - M, c1 * dT - dM)
    E0, dE0 = _dmax(a0 * U + Sp0.unsqueeze(1) - Sf, a0 * dT,
                    c0 * U - (Sn - Sq0.unsqueeze(1)) - M, c0 * dT - dM)
    E1 = torch.where(istar < n, E1, 1e300)
    E0 = torch.where(istar >= 1, E0, 1e300)
    Dmeet, d_Dmeet = _dmin(E0, dE0, E1, dE1)

    X, dX = _dmin(budD, d_budD, Dmeet, d_Dmeet)
    D, dD = _dmax(lowD, d_lowD, X, dX)
    A = D + M
    dA = dD + dM

    # --- drain: last position j with P_j ≤ D ---
    j_cap = torch.floor(D / U).clamp(min=0.0, max=float(n)).long()
    j_unc = torch.searchsorted(R.Sx, D - fU + Sf, right=True) - 1
    j = torch.where(D < fU, torch.minimum(j_cap, f - 1), torch.maximum(j_unc, f)).clamp(0, n - 1)
    mj = torch.minimum(j, f)
    Mj = torch.maximum(j, f)
    (_, SMj), (Gmj, _), (_, GSMj) = (v.unbind(1) for v in gat(torch.cat([mj, Mj], 1)))
    SMj, Gmj, GSMj = SMj.unsqueeze(1), Gmj.unsqueeze(1), GSMj.unsqueeze(1)
    mjf = mj.to(_F64)
    Pj = mjf * U + SMj - Sf
    gj = R.g.gather(1, j)
    drain = U * Gmj + GSMj - GSf + gj * (D - Pj)
    d_drain = dT * Gmj + gj * (dD - mjf * dT)

    # --- fill: first position l ≥ f with S_l − l·U ≤ A + S_n − n·U; positions ≥ l are at U ---
    above = ((S - R.ar * U) > (A + Sn - n * U)) & (R.ar >= ff)
    lstar = f + above.sum(1, keepdim=True)
    Sl, Gl, GSl = gat(lstar)
    rr = (n - lstar).to(_F64)
    ipart = (lstar - 1).clamp(min=0)
    has_part = lstar > f
    part = torch.where(has_part, A - (rr * U - (Sn - Sl)), zero)
    gi = R.g.gather(1, ipart)
    fill = U * (Gn - Gl) - (GSn - GSl) + gi * part
    d_fill = dT * (Gn - Gl) + torch.where(has_part, gi * (dA - rr * dT), zero)

    V = R.cm * T + (U * Gf + GSn - GSf) - drain + fill
    dV = R.cm * dT + dT * Gf - d_drain + d_fill
    fl = torch.cat([T, V, U, D, Pj, part], 1)
    lg = torch.cat([f, j, lstar], 1)
    return V.squeeze(1), dV.squeeze(1), (fl, lg)


def _solve_chunk(y: torch.Tensor, eps: torch.Tensor, mu: float, delta: float):
    """Exact optimum for a float64 [B, K] chunk (K ≥ 2). Returns (y', objective) in float64."""
    B, K = y.shape
    n = K - 1
    dev = y.device
    m = y.argmax(1, keepdim=True)
    ym = y.gather(1, m)  # [B, 1]
    eps = eps.unsqueeze(1)

    # ---- one sort: key = (y descending, class index ascending), top class forced first ----
    ibits = max(1, (K - 1).bit_length())
    lowmask = (1 << ibits) - 1
    low = lowmask - torch.arange(K, device=dev, dtype=torch.int64)
    bits = y.clamp(min=0.0).view(torch.int64)
    key = ((bits & ~lowmask) | low).view(_F64).neg_()
    key.scatter_(1, m, float("-inf"))
    if dev.type == "cpu":
        ks = torch.from_numpy(np.sort(key.numpy(), axis=1)[:, 1:])
    else:
        ks = torch.sort(key, dim=1).values[:, 1:]
    order = lowmask - (ks.neg_().view(torch.int64) & lowmask)

    R = _Rows()
    R.n = n
    s = y.gather(1, order)
    g = torch.log(s + delta)
    R.s, R.g = s, g
    R.sneg = s.neg()
    SGG = torch.zeros(B, 3, n + 1, dtype=_F64, device=dev)  # exclusive prefix sums of s, g, g·s
    SGG[:, 0, 1:] = s
    SGG[:, 1, 1:] = g
    torch.mul(g, s, out=SGG[:, 2, 1:])
    SGG.cumsum_(2)
    R.SGG = SGG
    R.Sx = SGG[:, 0, :n].contiguous()
    R.last = SGG[:, :, n]
    R.ym, R.cm, R.eps = ym, torch.log(ym + delta), eps
    ar = torch.arange(n + 1, device=dev, dtype=_F64).unsqueeze(0)
    R.ar, R.ar1 = ar, ar[:, 1:]

    # ---- feasible interval of T (spec §6.4 step 3) ----
    S = SGG[:, 0, :]
    T_flat = (1.0 + n * mu) / K
    T_lo = ((S + (ar * mu + (ym - 0.5 * eps))) * (1.0 / (ar + 1.0))).amax(1).clamp(min=T_flat)
    # The L1 needed at T is 2·max(y_m − T + F, F, T − y_m) (F = forced cut). Spec §6.4 step 3
    # keeps only the first term; above y_m (ties at the top with a small ε) F ≤ ε/2 binds:
    # T ≥ max_k (S_k + kμ − ε/2)/k.
    ym1, eps1 = ym.squeeze(1), eps.squeeze(1)
    over = T_lo > ym1
    if bool(over.any()):
        lines2 = (S[:, 1:] + (R.ar1 * mu - 0.5 * eps)) / R.ar1
        T_lo = torch.where(over, torch.maximum(T_lo, lines2.amax(1)), T_lo)
    T_hi = torch.clamp(ym1 + 0.5 * eps1, max=1.0)
    T_lo = torch.minimum(T_lo, T_hi)

    recs = []  # (rows, [T, V, U, D, Pj, part], [f, j, lstar]) of finished rows

    # ---- left end: the closed-form top cut when V does not decrease to its right ----
    Va, ga, st = _evaluate(R, T_lo, 1.0, mu)
    done = (ga >= 0) | (T_hi - T_lo <= 1e-15)
    if bool(done.all()):
        recs.append((None,) + st)
    else:
        dn = done.nonzero().squeeze(1)
        recs.append((dn, st[0][dn], st[1][dn]))
        rows = (~done).nonzero().squeeze(1)
        Ra = R.select(rows)
        a, Va, ga = T_lo[rows], Va[rows], ga[rows]
        b = T_hi[rows]
        Vb, dVb, st = _evaluate(Ra, b, -1.0, mu)
        gb = -dVb
        done = gb <= 0
        if bool(done.any()):
            dn = done.nonzero().squeeze(1)
            recs.append((rows[dn], st[0][dn], st[1][dn]))
            keep = (~done).nonzero().squeeze(1)
            rows, Ra = rows[keep], Ra.select(keep)
            a, Va, ga, b, Vb, gb = a[keep], Va[keep], ga[keep], b[keep], Vb[keep], gb[keep]
        # ---- cutting plane on [a, b]: lines through (a, Va) slope ga < 0 and (b, Vb) slope
        # gb > 0. Their intersection t carries the lower bound L = max(line_a, line_b)(t) ≤
        # min V; if V(t) ≤ L (+ rounding) t is optimal. Otherwise t replaces the end on its
        # side, adding the line of a new piece, so the loop ends after finitely many steps.
        it = 0
        while rows.numel() > 0:
            it += 1
            t = ((Vb - Va + ga * a - gb * b) / (ga - gb)).clamp(min=a, max=b)
            L = Va + ga * (t - a)
            Vt, gt, st = _evaluate(Ra, t, 1.0, mu)
            conv = (Vt - L <= _STOP_TOL * (1.0 + Vt.abs())) | (gt == 0) | (b - a <= 1e-15)
            if it >= _MAX_CUTS:
                conv = torch.ones_like(conv)
            if bool(conv.any()):
                dn = conv.nonzero().squeeze(1)
                recs.append((rows[dn], st[0][dn], st[1][dn]))
                keep = (~conv).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                rows, Ra = rows[keep], Ra.select(keep)
                a, Va, ga, b, Vb, gb = a[keep], Va[keep], ga[keep], b[keep], Vb[keep], gb[keep]
                t, Vt, gt = t[keep], Vt[keep], gt[keep]
            left = gt < 0
            a = torch.where(left, t, a)
            Va = torch.where(left, Vt, Va)
            ga = torch.where(left, gt, ga)
            b = torch.where(left, b, t)
            Vb = torch.where(left, Vb, Vt)
            gb = torch.where(left, gb, gt)

    if recs[0][0] is None:
        FL, LG = recs[0][1], recs[0][2]
    else:
        idx = torch.cat([r[0] for r in recs])
        FL = torch.empty(B, 6, dtype=_F64, device=dev)
        LG = torch.empty(B, 3, dtype=torch.int64, device=dev)
        FL[idx] = torch.cat([r[1] for r in recs])
        LG[idx] = torch.cat([r[2] for r in recs])
    T_out, V_out, U, D, Pj, part = FL.unbind(1)
    f, j, lst = LG.split(1, dim=1)

    # ---- rebuild y' in sorted order, then scatter back ----
    U = U.unsqueeze(1)
    w = torch.minimum(s, U)
    arn = R.ar[:, :n].long()
    v = w * (arn > j)  # drained: positions < j; position j keeps what the drain left
    wj = w.gather(1, j)
    v.scatter_(1, j, torch.minimum((Pj.unsqueeze(1) + wj - D.unsqueeze(1)).clamp(min=0.0), wj))
    v = torch.maximum(v, U * (arn >= lst))  # filled to the cap: positions ≥ l*
    ip = (lst - 1).clamp(min=0)
    vi = v.gather(1, ip)
    vi = torch.where(lst > f, torch.minimum((vi + part.unsqueeze(1)).clamp(min=0.0), U), vi)
    v.scatter_(1, ip, vi)
    out = torch.empty_like(y)
    out.scatter_(1, order, v)
    out.scatter_(1, m, T_out.unsqueeze(1))
    return out, V_out


def solve_mld(probs: torch.Tensor, eps, margin: float = 1e-4, log_delta: float = 1e-6):
    """Exact optimum of the per-sample ModelGuard-W LP (spec §6.2, batch_constraint = 0).

    ``probs``: [B, K] rows on the simplex; ``eps``: a float or a [B] tensor (L1 radius).
    Returns ``(released, objective)``: the released vectors in ``probs``' dtype and device,
    and the per-row objective Σ_j c_j y'_j (c_j = log(y_j + log_delta)) in float64,
    evaluated at the float64 solution. Raises ValueError when eps is below the feasibility
    bound 2(K−1)·margin/K.
    """
    e = _check_args(probs, eps, margin, log_delta)
    B, K = probs.shape
    y = probs.detach().to(_F64).contiguous()
    if B == 0:
        return probs.clone(), torch.zeros(0, dtype=_F64, device=probs.device)
    if K == 1:
        return probs.clone(), torch.log(y[:, 0] + log_delta)
    outs, objs = [], []
    for lo in range(0, B, _CHUNK):
        o, v = _solve_chunk(y[lo:lo + _CHUNK], e[lo:lo + _CHUNK], float(margin), float(log_delta))
        outs.append(o)
        objs.append(v)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    obj = objs[0] if len(objs) == 1 else torch.cat(objs)
    return out.to(probs.dtype), obj


# ----------------------------------------------------------------------------------------
# reference LP (PuLP + CBC), spec §6.2


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
    y = probs.detach().to(torch.float64).cpu().numpy()
    if batch_constraint:
        if torch.is_tensor(eps) or isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise ValueError(f"batch_constraint=True takes one float eps for the whole batch, got {eps!r}")
        e_rows = None
    else:
        e_rows = _check_args(probs, eps, margin, log_delta).cpu().numpy()
    c = np.log(y + log_delta)
    m = y.argmax(axis=1)

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
    released = torch.from_numpy(out).to(dtype=probs.dtype, device=probs.device)
    return released, obj.to(probs.device)
