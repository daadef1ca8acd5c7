"""Exact solvers for the ModelGuard-W linear program (strategy ``mld``; spec §6).

Per row, with c_j = log(y_j + δ) and m = argmax y (first max), the LP of spec §6.2 is

    minimise Σ_j c_j y'_j   s.t.  y' ∈ simplex,  ‖y' − y‖_1 ≤ ε,  y'_m − y'_j ≥ μ  (j ≠ m).

:func:`solve_mld` is exact and batched, in torch (CPU or CUDA), float64 internally. The
reference LP built with PuLP and solved by CBC is :func:`~modelguard.defense.mld_lp.solve_mld_lp`
(module ``mld_lp``; still importable from here).

How :func:`solve_mld` works (spec §6.4 gives the ingredients; the 1-D search is ours):

1. ``_sort_tables``: sort the non-top classes by y (= by cost), descending, ties by class
   index (one sort per row), and take the exclusive prefix sums of s, of the sorted costs g
   and of g·s.
2. ``_evaluate``: for a fixed top value T the inner problem is the greedy of spec §6.4 (drain the most
   expensive classes, fill the cheapest up to T − μ, stop at the budget or where the two
   pointers meet). Every quantity in it is written in closed form from the prefix sums and
   three indices (how many classes are above the cap, where the drain stops, where the fill
   stops), and each index is a branch-free binary search over the sorted row (one gather
   per probe), so one evaluation of V(T) is O(log K) per row (no [B, K] pass, no cumsum).
   The searches run on [rows] vectors in numpy on CPU (lower per-op overhead) and in torch
   elsewhere, with identical arithmetic; finished rows leave the set without copying tables.
   The same pass carries the one-sided derivative dV/dT along (forward-mode, with the
   one-sided rule at kinks), i.e. the slope of the linear piece of V next to T.
3. ``_feasible_interval``, ``_search``: V is convex and piecewise linear on [T_lo, T_hi]
   (closed-form ends, spec §6.4 step 3).
   If the right slope at T_lo is ≥ 0 the answer is T_lo (the closed-form "top cut"; most
   peaked rows stop here), if the left slope at T_hi is ≤ 0 it is T_hi. Otherwise we run the
   1-D cutting-plane (Kelley) method: intersect the supporting lines at the two bracket ends,
   evaluate there, and stop when V equals the lower bound given by the two lines. Each step
   adds the line of a new piece, so it ends after finitely many steps at an exact breakpoint
   (no golden-section search, no tolerance on T). Measured: ~80% of peaked rows stop at
   T_lo; the rest take 1–7 steps; flat Dirichlet(10) rows at K = 256 take 6–10.
4. ``_rebuild``: rebuild y' from the three indices at T*, scatter back to class order.

Tie rule (spec §6.6, §12.1): among equal costs the lower class index is drained first and
the higher index is filled first. The sort key keeps the top 44 mantissa bits of y (for
K ≤ 256; fewer for larger K) and puts the class index in the low bits, so classes whose
probabilities agree to ~6e-14 relative are treated as tied and ordered by index; this is
what makes the sort one fast pass of a plain (non-stable) float sort, and it changes the
objective by well under 1e-12.
"""
from __future__ import annotations

import numpy as np
import torch

from modelguard.defense.base import release_dtype
from modelguard.utils.checks import check_number
from modelguard.utils.rows import row_chunks

__all__ = ["solve_mld", "min_feasible_eps"]

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
    check_number(margin, "margin", low=0, fix="pass margin=1e-4 (the spec default)")
    check_number(log_delta, "log_delta", low=0, low_open=True, fix="pass log_delta=1e-6 (the spec default)")
    B, K = probs.shape
    if torch.is_tensor(eps):
        e = eps.detach().to(device=probs.device, dtype=_F64).reshape(-1)
        if e.numel() == 1:
            e = e.expand(B)
        if e.numel() != B:
            raise ValueError(f"eps must be a float or a [batch] tensor; got {e.numel()} values for a batch of {B}")
    else:
        eps = check_number(eps, "eps", note="or a [batch] tensor", fix="pass e.g. eps=1.0")
        e = torch.full((B,), eps, dtype=_F64, device=probs.device)
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
    # a finite sum implies finite entries (one cheap reduction); only otherwise check each entry
    if not bool(torch.isfinite(probs.sum())) and not bool(torch.isfinite(probs).all()):
        raise ValueError("probs contains NaN or inf; the ModelGuard-W LP needs finite probabilities")
    return e


# ----------------------------------------------------------------------------------------
# array backends: the solver below is written once against this small set of operations,
# so the numpy path (CPU, lower per-op overhead) and the torch path (CUDA or CPU) run the
# same arithmetic in the same order.


class _NumpyOps:
    nan = float("nan")

    @staticmethod
    def f64(a):
        return a.astype(np.float64)

    @staticmethod
    def i64(a):
        return a.astype(np.int64)

    mx = staticmethod(np.maximum)  # array, array
    mn = staticmethod(np.minimum)
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    log = staticmethod(np.log)

    @staticmethod
    def lo(a, x):  # max(a, scalar)
        return np.maximum(a, x)

    @staticmethod
    def hi(a, x):  # min(a, scalar)
        return np.minimum(a, x)

    @staticmethod
    def nz(mask):
        return np.flatnonzero(mask)

    @staticmethod
    def anyb(mask):
        return bool(mask.any())

    @staticmethod
    def allb(mask):
        return bool(mask.all())

    @staticmethod
    def arange(n, like, float_=False):
        return np.arange(n, dtype=np.float64 if float_ else np.int64)

    @staticmethod
    def full(shape, v, like):
        return np.full(shape, v, dtype=np.float64)

    @staticmethod
    def zeros(n, like, int_=False):
        return np.zeros(n, dtype=np.int64 if int_ else np.float64)


class _TorchOps:
    nan = float("nan")

    @staticmethod
    def f64(a):
        return a.to(_F64)

    @staticmethod
    def i64(a):
        return a.long()

    mx = staticmethod(torch.maximum)
    mn = staticmethod(torch.minimum)
    where = staticmethod(torch.where)
    abs = staticmethod(torch.abs)
    floor = staticmethod(torch.floor)
    ceil = staticmethod(torch.ceil)
    log = staticmethod(torch.log)

    @staticmethod
    def lo(a, x):
        return a.clamp(min=x)

    @staticmethod
    def hi(a, x):
        return a.clamp(max=x)

    @staticmethod
    def nz(mask):
        return mask.nonzero().squeeze(1)

    @staticmethod
    def anyb(mask):
        return bool(mask.any())

    @staticmethod
    def allb(mask):
        return bool(mask.all())

    @staticmethod
    def arange(n, like, float_=False):
        return torch.arange(n, device=like.device, dtype=_F64 if float_ else torch.int64)

    @staticmethod
    def full(shape, v, like):
        return torch.full(shape, v, dtype=_F64, device=like.device)

    @staticmethod
    def zeros(n, like, int_=False):
        return torch.zeros(n, dtype=torch.int64 if int_ else _F64, device=like.device)


def _dmax(o, a, da, b, db):
    """max(a, b) with its one-sided derivative (max of the derivatives at a kink)."""
    v = o.mx(a, b)
    d = o.where(a > b, da, db)
    tie = o.abs(a - b) <= _KINK_TOL
    return v, o.where(tie, o.mx(da, db), d)


def _dmin(o, a, da, b, db):
    v = o.mn(a, b)
    d = o.where(a < b, da, db)
    tie = o.abs(a - b) <= _KINK_TOL
    return v, o.where(tie, o.mn(da, db), d)


class _Tab:
    """The sorted problem of a chunk, as flat arrays with row stride W = 2^k ≥ n + 1.

    ``s``, ``g``: sorted values and costs at positions 0..n−1; ``S``, ``G``, ``GS``: exclusive
    prefix sums at 0..n. Unused slots hold NaN, so every comparison made there by the
    binary searches is false.
    """

    __slots__ = ("s", "g", "S", "G", "GS", "n", "steps")


class _Rv:
    """Per-row scalars of the rows still in play ([R] vectors)."""

    __slots__ = ("base", "ym", "cm", "eps", "Sn", "Gn", "GSn")

    def select(self, idx):
        o = _Rv()
        for k in self.__slots__:
            setattr(o, k, getattr(self, k)[idx])
        return o


def _evaluate(o, tb: _Tab, R: _Rv, T, direction: float, mu: float):
    """V(T) and its directional derivative along ``direction`` (+1: right, −1: left), per row.

    Also returns the structure needed to rebuild y' at T. Notation as in spec §6.4 with
    0-based sorted positions: the first f classes are above the cap U = T − μ, the drain
    takes D from the top of the list, the fill adds A at the bottom (cheapest first, up to U).
    With S, G, GS the exclusive prefix sums of s, g and g·s:
      P_i = min(i,f)·U + S_max(i,f) − S_f        (mass above position i after capping)
      Q_i = (n − max(i+1,f))·U − (S_n − S_max(i+1,f))   (free capacity below position i)
    Every branch (min/max, index choice) is taken on values; the derivative follows the branch,
    with the one-sided rule (max → larger slope, min → smaller) where two values tie.

    The three indices come from branch-free binary searches over the sorted row (each probe is
    one gather per row), so one evaluation costs O(log K) per row, not O(K): every predicate
    searched is monotone along the sorted positions (true on a prefix), and the search returns
    the length of that prefix, i.e. the count the O(K) formulation takes.
    """
    n, steps = tb.n, tb.steps
    s, S, G, GS = tb.s, tb.S, tb.G, tb.GS
    base, Sn, Gn, GSn = R.base, R.Sn, R.Gn, R.GSn
    dT = direction
    U = T - mu

    # f: classes strictly above the cap (s_i > U; s_i ≥ U for the left derivative)
    bp = base
    for st in steps:
        v = s[bp + (st - 1)]
        bp = bp + ((v > U) if direction > 0 else (v >= U)) * st
    fb = bp  # flat position of f
    f = fb - base
    ff = o.f64(f)
    Sf, Gf, GSf = S[fb], G[fb], GS[fb]
    fU = ff * U
    F = Sf - fU  # forced cut
    M = 1.0 - T - (fU + Sn - Sf)
    dM = (1.0 + ff) * (-dT)
    x = T - R.ym
    p = o.f64(x > _KINK_TOL)
    q = o.f64(x < -_KINK_TOL)
    d_abs = (p - q) * dT + (1.0 - p - q)  # d|x|: ±dT off zero, +1 at 0
    bud = R.eps - o.abs(x) - F
    d_bud = ff * dT - d_abs
    zero = T * 0.0
    lowD, d_lowD = _dmax(o, zero, zero, -M, -dM)
    budD = 0.5 * (bud - M)
    d_budD = 0.5 * (d_bud - dM)

    # --- meeting point D_meet = min_i max(P_i, Q_i − M): i* = first i with P_i ≥ Q_i − M ---
    Qf = (n - ff) * U - (Sn - Sf)  # Q_i for every i < f
    kappa = Qf - M
    i_cap = o.ceil(o.hi(o.lo(kappa / U, 0.0), float(n)))  # h(i) = iU − κ for i < f
    # for i ≥ f: h(i) ≥ 0 ⇔ (i+1)·U − s_i ≥ κ, and (i+1)·U − s_i increases strictly in i
    bp = base
    pf = zero
    for st in steps:
        v = s[bp + (st - 1)]
        inc = (((pf + st) * U - v) < kappa) * st
        bp = bp + inc
        pf = pf + inc
    a_cnt = bp - base
    istar = o.where(i_cap < ff, o.i64(i_cap), o.mx(a_cnt, f))
    i1 = o.hi(istar, n - 1)
    i0 = o.lo(istar - 1, 0)
    bq1 = o.mx(i1 + 1, f)
    bq0 = o.mx(i0 + 1, f)
    Sp1 = S[base + o.mx(i1, f)]
    Sq1 = S[base + bq1]
    Sp0 = S[base + o.mx(i0, f)]
    Sq0 = S[base + bq0]
    a1 = o.f64(o.mn(i1, f))
    a0 = o.f64(o.mn(i0, f))
    c1 = o.f64(n - bq1)
    c0 = o.f64(n - bq0)
    # E_i = max(P_i, Q_i − M) at i* and i* − 1; D_meet is the smaller (one-sided rule at kinks)
    E1, dE1 = _dmax(o, a1 * U + Sp1 - Sf, a1 * dT, c1 * U - (Sn - Sq1) - M, c1 * dT - dM)
    E0, dE0 = _dmax(o, a0 * U + Sp0 - Sf, a0 * dT, c0 * U - (Sn - Sq0) - M, c0 * dT - dM)
    E1 = o.where(istar < n, E1, 1e300)
    E0 = o.where(istar >= 1, E0, 1e300)
    Dmeet, d_Dmeet = _dmin(o, E0, dE0, E1, dE1)

    X, dX = _dmin(o, budD, d_budD, Dmeet, d_Dmeet)
    D, dD = _dmax(o, lowD, d_lowD, X, dX)
    A = D + M
    dA = dD + dM

    # --- drain: last position j with P_j ≤ D ---
    j_cap = o.i64(o.hi(o.lo(o.floor(D / U), 0.0), float(n)))
    xs = D - fU + Sf
    bp = base
    for st in steps:  # #{i ≤ n : S_i ≤ xs}, capped at n below
        bp = bp + (S[bp + (st - 1)] <= xs) * st
    j_unc = o.hi(bp - base, n) - 1
    j = o.hi(o.lo(o.where(D < fU, o.mn(j_cap, f - 1), o.mx(j_unc, f)), 0), n - 1)
    mj = o.mn(j, f)
    Mj = o.mx(j, f)
    SMj = S[base + Mj]
    GSMj = GS[base + Mj]
    Gmj = G[base + mj]
    mjf = o.f64(mj)
    Pj = mjf * U + SMj - Sf
    gj = tb.g[base + j]
    drain = U * Gmj + GSMj - GSf + gj * (D - Pj)
    d_drain = dT * Gmj + gj * (dD - mjf * dT)

    # --- fill: first position l ≥ f with S_l − l·U ≤ A + S_n − n·U; positions ≥ l are at U ---
    thr = A + Sn - n * U
    bp = base
    pf = zero
    for st in steps:
        i = pf + (st - 1)
        inc = ((i < ff) | ((S[bp + (st - 1)] - i * U) > thr)) * st
        bp = bp + inc
        pf = pf + inc
    lb = bp
    lstar = lb - base
    Sl, Gl, GSl = S[lb], G[lb], GS[lb]
    rr = o.f64(n - lstar)
    ipart = o.lo(lstar - 1, 0)
    has_part = lstar > f
    part = o.where(has_part, A - (rr * U - (Sn - Sl)), zero)
    gi = tb.g[base + ipart]
    fill = U * (Gn - Gl) - (GSn - GSl) + gi * part
    d_fill = dT * (Gn - Gl) + o.where(has_part, gi * (dA - rr * dT), zero)

    V = R.cm * T + (U * Gf + GSn - GSf) - drain + fill
    dV = R.cm * dT + dT * Gf - d_drain + d_fill
    return V, dV, (T, V, U, D, Pj, part, f, j, lstar)


def _sort_tables(y: torch.Tensor, m: torch.Tensor, delta: float):
    """Step 1: one sort per row and the search tables.

    Returns ``(order, X)``: ``order`` [B, K] the classes in sorted position (column 0 the top
    class ``m`` [B, 1], then the others by y descending, ties by class index) and ``X`` one
    [5, B, W] block (W = 2^k ≥ K) holding the rows s, g, S, G, GS: column c of s and g is
    sorted position c − 1 (column 0: the top class), column i of S, G, GS the exclusive
    prefix sum up to position i; columns ≥ K (only when K is not a power of 2) hold NaN, so
    every comparison the binary searches make there is false.
    """
    B, K = y.shape
    W = 1 << (K - 1).bit_length()
    dev = y.device
    # key = (y descending, class index ascending), top class forced first
    ibits = max(1, (K - 1).bit_length())
    lowmask = (1 << ibits) - 1
    low = lowmask - torch.arange(K, device=dev, dtype=torch.int64)
    bits = y.clamp(min=0.0).view(torch.int64)
    key = ((bits & ~lowmask) | low).view(_F64).neg_()
    key.scatter_(1, m, float("-inf"))
    if dev.type == "cpu":
        ks = torch.from_numpy(np.sort(key.numpy(), axis=1))
    else:
        ks = torch.sort(key, dim=1).values  # keys are distinct: no stability needed
    order = lowmask - (ks.neg_().view(torch.int64) & lowmask)  # [B, K], top class first
    order[:, :1] = m

    X = torch.empty(5, B, W, dtype=_F64, device=dev)
    if W == K:
        torch.gather(y, 1, order, out=X[0])
        torch.log(X[0] + delta, out=X[1])
    else:
        X[:, :, K:] = float("nan")
        X[0, :, :K] = y.gather(1, order)
        X[1, :, :K] = torch.log(X[0, :, :K] + delta)
    X[2:4] = X[0:2]
    X[2:4, :, 0] = 0.0
    torch.mul(X[2], X[3], out=X[4])
    X[2:5, :, :K].cumsum_(2)
    return order, X


def _feasible_interval(S: torch.Tensor, ym2: torch.Tensor, eps: torch.Tensor, mu: float):
    """Step 2: the interval [T_lo, T_hi] of feasible top values (spec §6.4 step 3), from the
    exclusive prefix sums ``S`` [B, K] of the sorted row and the top values ``ym2`` [B, 1]."""
    K = S.shape[1]
    n = K - 1
    ar = torch.arange(n + 1, device=S.device, dtype=_F64).unsqueeze(0)
    T_flat = (1.0 + n * mu) / K
    T_lo = ((S + (ar * mu + (ym2 - 0.5 * eps.unsqueeze(1)))) * (1.0 / (ar + 1.0))).amax(1).clamp(min=T_flat)
    # The L1 needed at T is 2·max(y_m − T + F, F, T − y_m) (F = forced cut). Spec §6.4 step 3
    # keeps only the first term; above y_m (ties at the top with a small ε) F ≤ ε/2 binds:
    # T ≥ max_k (S_k + kμ − ε/2)/k.
    ym = ym2.squeeze(1)
    over = T_lo > ym
    if bool(over.any()):
        ar1 = ar[:, 1:]
        lines2 = (S[:, 1:] + (ar1 * mu - 0.5 * eps.unsqueeze(1))) / ar1
        T_lo = torch.where(over, torch.maximum(T_lo, lines2.amax(1)), T_lo)
    T_hi = torch.clamp(ym + 0.5 * eps, max=1.0)
    T_lo = torch.minimum(T_lo, T_hi)
    return T_lo, T_hi


def _search_state(X: torch.Tensor, K: int, ym: torch.Tensor, eps: torch.Tensor, cv):
    """The search's view of the tables: ``_Tab`` (flat arrays with row stride W) and ``_Rv``
    (the per-row scalars), converted by ``cv`` (to numpy, or kept as torch)."""
    _, B, W = X.shape
    n = K - 1
    Xf = cv(X.view(-1))
    tb = _Tab()
    tb.n = n
    tb.steps = [1 << b for b in range(n.bit_length() - 1, -1, -1)]
    BW = B * W
    tb.s, tb.g, tb.S, tb.G, tb.GS = Xf[1:], Xf[BW + 1:], Xf[2 * BW:], Xf[3 * BW:], Xf[4 * BW:]
    R = _Rv()
    R.base = cv(torch.arange(B, device=X.device) * W)
    Sn, Gn, GSn = X[2:5, :, n]
    cm = X[1, :, 0]
    R.ym, R.cm, R.eps, R.Sn, R.Gn, R.GSn = (cv(v.contiguous()) for v in (ym, cm, eps, Sn, Gn, GSn))
    return tb, R


def _search(o, tb: _Tab, R: _Rv, T_lo, T_hi, mu: float) -> list:
    """Step 3: the optimal T per row and the structure to rebuild y' there.

    Returns the nine [B] arrays T, V, U, D, Pj, part (float) and f, j, l* (int) of
    :func:`_evaluate` at T*. The closed-form ends first (right slope at T_lo ≥ 0: T_lo;
    left slope at T_hi ≤ 0: T_hi), then the cutting plane for the remaining rows.
    """
    B = T_lo.shape[0]
    like = T_lo
    res = [o.zeros(B, like) for _ in range(6)] + [o.zeros(B, like, int_=True) for _ in range(3)]

    def store(rows, st, sel):
        if sel is None:
            for r_, v_ in zip(res, st):
                r_[rows] = v_
        else:
            ids = rows[sel]
            for r_, v_ in zip(res, st):
                r_[ids] = v_[sel]

    # ---- left end: the closed-form top cut when V does not decrease to its right ----
    Va, ga, st = _evaluate(o, tb, R, T_lo, 1.0, mu)
    done = (ga >= 0) | (T_hi - T_lo <= 1e-15)
    if o.allb(done):
        return list(st)
    store(o.arange(B, like), st, o.nz(done))
    rows = o.nz(~done)
    Ra = R.select(rows)
    a, Va, ga = T_lo[rows], Va[rows], ga[rows]
    b = T_hi[rows]
    # ---- right end: T_hi when V does not increase to its left ----
    Vb, dVb, st = _evaluate(o, tb, Ra, b, -1.0, mu)
    gb = -dVb
    done = gb <= 0
    if o.anyb(done):
        store(rows, st, o.nz(done))
        keep = o.nz(~done)
        rows, Ra = rows[keep], Ra.select(keep)
        a, Va, ga, b, Vb, gb = a[keep], Va[keep], ga[keep], b[keep], Vb[keep], gb[keep]
    # ---- cutting plane on [a, b]: lines through (a, Va) slope ga < 0 and (b, Vb) slope
    # gb > 0. Their intersection t carries the lower bound L = max(line_a, line_b)(t) ≤
    # min V; if V(t) ≤ L (+ rounding) t is optimal. Otherwise t replaces the end on its
    # side, adding the line of a new piece, so the loop ends after finitely many steps.
    it = 0
    while rows.shape[0] > 0:
        it += 1
        t = o.mn(o.mx((Vb - Va + ga * a - gb * b) / (ga - gb), a), b)
        L = Va + ga * (t - a)
        Vt, gt, st = _evaluate(o, tb, Ra, t, 1.0, mu)
        conv = (Vt - L <= _STOP_TOL * (1.0 + o.abs(Vt))) | (gt == 0) | (b - a <= 1e-15)
        if it >= _MAX_CUTS:
            conv = conv | True
        if o.anyb(conv):
            if o.allb(conv):
                store(rows, st, None)
                break
            store(rows, st, o.nz(conv))
            keep = o.nz(~conv)
            rows, Ra = rows[keep], Ra.select(keep)
            a, Va, ga, b, Vb, gb = a[keep], Va[keep], ga[keep], b[keep], Vb[keep], gb[keep]
            t, Vt, gt = t[keep], Vt[keep], gt[keep]
        left = gt < 0
        a = o.where(left, t, a)
        Va = o.where(left, Vt, Va)
        ga = o.where(left, gt, ga)
        b = o.where(left, b, t)
        Vb = o.where(left, Vb, Vt)
        gb = o.where(left, gb, gt)
    return res


def _rebuild(y: torch.Tensor, order: torch.Tensor, sF: torch.Tensor, res: list):
    """Step 4: y' from the indices at T* (``res`` as returned by :func:`_search`, torch),
    in sorted order (column c = position c − 1, column 0 = top), scattered back to class
    order. Returns (y', V*)."""
    T_out, V_out, U, D, Pj, part, f, j, lst = (r_.unsqueeze(1) for r_ in res)
    n = y.shape[1] - 1
    w = torch.minimum(sF, U)
    arn = torch.arange(-1, n, device=y.device, dtype=torch.int64).unsqueeze(0)
    v = w * (arn > j)  # drained: positions < j; position j keeps what the drain left
    j1 = j + 1
    wj = w.gather(1, j1)
    v.scatter_(1, j1, torch.minimum((Pj + wj - D).clamp(min=0.0), wj))
    v = torch.maximum(v, U * (arn >= lst))  # filled to the cap: positions ≥ l*
    ip = lst.clamp(min=1)
    vi = v.gather(1, ip)
    vi = torch.where(lst > f, torch.minimum((vi + part).clamp(min=0.0), U), vi)
    v.scatter_(1, ip, vi)
    v[:, :1] = T_out
    out = torch.empty_like(y)
    out.scatter_(1, order, v)
    return out, V_out.squeeze(1)


def _solve_chunk(y: torch.Tensor, eps: torch.Tensor, mu: float, delta: float, use_numpy: bool,
                 m: torch.Tensor):
    """Exact optimum for a float64 [B, K] chunk (K ≥ 2) of rows that sum to 1 to float64
    rounding, with top classes ``m`` [B]. Returns (y', objective) in float64.

    The one-off O(K) work per row (sort, prefix sums, T_lo, rebuild) is a handful of torch ops
    on [B, K]; the search, O(log K) per row and evaluation, runs many small ops on [rows]
    vectors, in numpy when ``use_numpy`` (CPU only: a numpy op costs far less fixed overhead
    than a torch op) or in torch. Both run the same arithmetic and give identical results.
    """
    K = y.shape[1]
    m = m.unsqueeze(1)
    ym2 = y.gather(1, m)  # [B, 1]
    order, X = _sort_tables(y, m, delta)
    T_lo, T_hi = _feasible_interval(X[2, :, :K], ym2, eps, mu)
    if use_numpy:
        o, cv = _NumpyOps, torch.Tensor.numpy
    else:
        o, cv = _TorchOps, (lambda t: t)
    tb, R = _search_state(X, K, ym2.squeeze(1), eps, cv)
    res = _search(o, tb, R, cv(T_lo), cv(T_hi), mu)
    if use_numpy:
        res = [torch.from_numpy(r_) for r_ in res]
    return _rebuild(y, order, X[0, :, :K], res)


def simplex_rows(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the LP is posed on: ``probs`` in float64, renormalised to sum to 1, and the
    top class of each row (first max of the rows as given).

    The closed form (and the LP's own constraints Σ y' = 1, ‖y' − y‖_1 ≤ ε) assume Σ y = 1.
    A float32 softmax row sums to 1 only within ~2e-7 and a half-precision one within ~1e-3;
    posed on the raw row, the drain/fill accounting is off by that much and the search can
    stop at the wrong breakpoint (up to 1.5 nats above the optimum on float32 rows). Both
    backends therefore solve the LP of the renormalised row, which moves every entry by less
    than the input dtype's rounding, so ‖y' − y‖_1 ≤ ε holds for the raw row within it too.
    The top class is taken before the division, so renormalising can never change it.
    """
    m = probs.argmax(1)
    y = probs.detach().to(_F64)
    y = (y / y.sum(1, keepdim=True)).contiguous()
    return y, m


def solve_mld(probs: torch.Tensor, eps, margin: float = 1e-4, log_delta: float = 1e-6):
    """Exact optimum of the per-sample ModelGuard-W LP (spec §6.2, batch_constraint = 0).

    ``probs``: [B, K] rows on the simplex in any float dtype, on CPU or CUDA (float32 softmax
    rows that sum to 1 within rounding are valid: the LP is posed on the row renormalised in
    float64, see :func:`simplex_rows`); ``eps``: a float or a [B] tensor (L1 radius).
    Returns ``(released, objective)``: the released vectors on ``probs``' device, in its
    dtype, except float16/bfloat16, which are released as float32 (a 1e-4 margin does not
    survive rounding to half precision: the top class would tie or fall behind), and the
    per-row objective Σ_j c_j y'_j (c_j = log(ŷ_j + log_delta), ŷ the renormalised row) in
    float64, at the float64 solution. Raises ValueError when eps is below the feasibility
    bound 2(K−1)·margin/K.
    """
    e = _check_args(probs, eps, margin, log_delta)
    B, K = probs.shape
    out_dtype = release_dtype(probs.dtype)
    if B == 0:
        return probs.to(out_dtype, copy=True), torch.zeros(0, dtype=_F64, device=probs.device)
    y, m = simplex_rows(probs)
    if K == 1:
        return y.to(out_dtype), torch.log(y[:, 0] + log_delta)
    out, obj = _solve(y, e, float(margin), float(log_delta), y.device.type == "cpu", m)
    return out.to(out_dtype), obj


def _solve(y: torch.Tensor, e: torch.Tensor, mu: float, delta: float, numpy: bool,
           m: torch.Tensor | None = None):
    """Chunked exact solve of float64 rows ``y`` (renormalised) with budgets ``e`` and top
    classes ``m`` (default: first max); ``numpy`` picks the numpy backend (CPU tensors only)
    or the torch one (any device). Both run the same arithmetic."""
    B = y.shape[0]
    if m is None:
        m = y.argmax(1)
    outs, objs = [], []
    for lo, hi in row_chunks(B, _CHUNK):
        o, v = _solve_chunk(y[lo:hi], e[lo:hi].contiguous(), mu, delta, numpy, m[lo:hi])
        outs.append(o)
        objs.append(v)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    obj = objs[0] if len(objs) == 1 else torch.cat(objs)
    return out, obj


def __getattr__(name: str):
    # solve_mld_lp moved to mld_lp (it imports this module, so no import at the top)
    if name == "solve_mld_lp":
        from modelguard.defense.mld_lp import solve_mld_lp

        return solve_mld_lp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
