"""MAD, Maximizing Angular Deviation (Orekondy et al.): steer the attacker's gradient (spec §4)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from modelguard.defense.base import Defense, check_probs, release_dtype, strict_top1
from modelguard.utils.checks import check_number
from modelguard.utils.rows import row_distance

BUMP = 1e-5  # added to the top class of every vertex candidate before normalising (§4.3)
SMOOTH = 1e-8  # y + 1e-8, renormalised, inside the objective of the K > 10 path (§4.3)
DENOM_GUARD = 1e-7  # line-search denominator guard (§4.4)
BUDGET = 1024  # candidate evaluations of the greedy path (§4.3)
EXHAUSTIVE_MAX_K = 10  # up to this K the oracle enumerates all 2^(K-1) vertices (§4.3)
TIE_TOL = 1e-12  # objective values this close count as equal: the first candidate wins
_CHUNK_ELEMENTS = 1 << 22  # rows are processed in chunks of at most this many float64s per temporary

ORACLES = ("argmax", "extreme", "argmin")
OBJECTIVES = ("angular", "surrogate")
NORMS = ("l1", "l2")


def mad_objective(
    cands: torch.Tensor, y: torch.Tensor, p: torch.Tensor | None, objective: str = "angular"
) -> torch.Tensor:
    """MAD's objective for candidates ``cands`` ([..., N, K]) against the reference ``y`` ([..., K]).

    With the proxy posterior ``p`` ([..., K]) this is the Jacobian objective in the exact
    form of spec §4.2: for the last-layer weight, ``Gᵀa = vec((p − a)hᵀ)`` whenever ``a``
    sums to 1, so

    - angular: ``‖Gᵀã/‖Gᵀã‖ − Gᵀy/‖Gᵀy‖‖² = ‖(p−ã)/‖p−ã‖ − (p−y)/‖p−y‖‖²``;
    - surrogate: ``‖Gᵀ(ã − y)‖² = ‖h‖²·‖ã − y‖²``, returned without the constant ``‖h‖²``
      (same maximiser; the logged value differs by that factor).

    Without ``p`` it is the ``G = I`` objective the original uses without side information:
    ``‖ã/‖ã‖ − y/‖y‖‖²`` (angular) or ``‖ã − y‖²``. A zero direction gives NaN.
    """
    if objective == "surrogate":
        return (cands - y.unsqueeze(-2)).pow(2).sum(-1)
    if p is None:
        v, vy = cands, y
    else:
        v, vy = p.unsqueeze(-2) - cands, p - y
    u = v / v.norm(dim=-1, keepdim=True)
    uy = vy / vy.norm(dim=-1, keepdim=True)
    return (u - uy.unsqueeze(-2)).pow(2).sum(-1)


def _first_best(obj: torch.Tensor) -> torch.Tensor:
    """Index of the first candidate within TIE_TOL of the best (NaN and -inf never win).

    This is "keep the first candidate that strictly improves the best value" of §4.3 with
    ties decided by position rather than by round-off.
    """
    best = obj.max(dim=-1, keepdim=True).values
    return (obj >= best - TIE_TOL).to(torch.int8).argmax(dim=-1)


@functools.lru_cache(maxsize=32)
def _vertex_candidates(k: int, device: str) -> torch.Tensor:
    """[K, 2^(K-1), K] float64: for each top class m, the candidates of the K ≤ 10 path in
    their order (§4.3): every b ∈ {0,1}^K with b_m = 1, lexicographic with the first
    coordinate most significant, then b_m += 1e-5 and b / Σb."""
    codes = torch.arange(1 << k, dtype=torch.int64)
    shifts = torch.arange(k - 1, -1, -1, dtype=torch.int64)
    bits = ((codes[:, None] >> shifts) & 1).to(torch.float64)  # [2^K, K], row n = digits of n
    out = []
    for m in range(k):
        b = bits[bits[:, m] == 1].clone()
        b[:, m] += BUMP
        out.append(b / b.sum(1, keepdim=True))
    return torch.stack(out).to(device)


def _rows_per_chunk(per_row: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(per_row, 1))


def _oracle_exhaustive(y: torch.Tensor, p: torch.Tensor | None, m: torch.Tensor, objective: str) -> torch.Tensor:
    """The K ≤ 10 path of §4.3: all rows at once, grouped by top class (≤ 10 groups).

    The angular value is computed as ``1 + ‖w‖² − 2·(v·w)/‖v‖`` with ``‖v‖`` summed
    directly (no cancellation-prone expansion), which equals :func:`mad_objective` up
    to round-off (tests compare with a literal loop)."""
    rows, k = y.shape
    table = _vertex_candidates(k, str(y.device))
    ystar = torch.empty_like(y)
    if objective == "angular":
        vy = y if p is None else p - y
        w = vy / vy.norm(dim=1, keepdim=True)
        w_sq = w.pow(2).sum(1, keepdim=True)
    step = _rows_per_chunk(table.shape[1] * k)
    for cls in m.unique().tolist():
        members = (m == cls).nonzero().squeeze(1)
        cands = table[cls]  # [N, K]
        for s in range(0, members.numel(), step):
            idx = members[s : s + step]
            if objective == "surrogate":
                obj = (cands - y[idx, None, :]).pow(2).sum(-1)
            else:
                if p is None:
                    n2 = cands.pow(2).sum(-1)[None, :]  # [1, N]
                    dot = w[idx] @ cands.T  # [b, N]
                else:
                    v = p[idx, None, :] - cands  # [b, N, K]
                    n2 = v.pow(2).sum(-1)
                    dot = torch.bmm(v, w[idx, :, None]).squeeze(-1)
                obj = 1.0 + w_sq[idx] - 2.0 * dot / n2.sqrt()
                obj = torch.where(n2 > 0, obj, torch.full_like(obj, float("nan")))
            ystar[idx] = cands[_first_best(torch.nan_to_num(obj, nan=-2.0))]
    return ystar


def _exclusive_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ_{j≠k} x_j for every k, as prefix + suffix sums (no subtraction, so no cancellation)."""
    pre = F.pad(x.cumsum(1)[:, :-1], (1, 0))
    suf = F.pad(x.flip(1).cumsum(1).flip(1)[:, 1:], (0, 1))
    return pre + suf


def _oracle_greedy(y: torch.Tensor, p: torch.Tensor | None, m: torch.Tensor, objective: str) -> torch.Tensor:
    """The K > 10 path of §4.3, batched over rows (one Python iteration per greedy round).

    In round r every candidate is ``c_k = (base + e_k)/s`` with ``base = 1_F + 1e-5·e_m`` and
    ``s = |F| + 1 + 1e-5``, so its objective direction is ``v_k = q + t·e_k`` for one
    row vector ``q`` and scalar ``t``. ``‖v_k‖²`` and ``v_k·w`` then come from exclusive
    sums in O(K) per row instead of O(K²); the result is the objective of
    :func:`mad_objective` up to round-off (tests compare with a literal loop).
    """
    rows, k = y.shape
    ar = torch.arange(rows, device=y.device)
    ys = y + SMOOTH
    ys = ys / ys.sum(1, keepdim=True)
    if objective == "angular":
        vy = ys if p is None else p - ys
        w = vy / vy.norm(dim=1, keepdim=True)
    else:
        w = None
    fixed = torch.zeros(rows, k, dtype=torch.bool, device=y.device)
    fixed[ar, m] = True
    base = fixed.to(torch.float64)
    base[ar, m] += BUMP
    best_mask = fixed.clone()  # e_m: the answer when no candidate ever scores (all NaN)
    best_val = torch.full((rows,), -1.0, dtype=torch.float64, device=y.device)
    used, n_fixed = 0, 1
    while used < BUDGET and n_fixed < k:
        s = n_fixed + 1 + BUMP
        if objective == "surrogate":
            q, t = base / s - ys, 1.0 / s
        elif p is None:
            q, t = base / s, 1.0 / s
        else:
            q, t = p - base / s, -1.0 / s
        obj = _shifted_unit_objective(q, t, w if objective == "angular" else None)
        obj = obj.masked_fill(fixed, float("-inf"))
        kk = _first_best(obj)
        val = obj[ar, kk]
        fixed[ar, kk] = True
        base[ar, kk] += 1.0
        improved = val > best_val + TIE_TOL
        best_mask = torch.where(improved[:, None], fixed, best_mask)
        best_val = torch.where(improved, val, best_val)
        used += k - n_fixed
        n_fixed += 1
    ystar = best_mask.to(torch.float64)
    ystar[ar, m] += BUMP
    return ystar / ystar.sum(1, keepdim=True)


def _shifted_unit_objective(q: torch.Tensor, t: float, w: torch.Tensor | None) -> torch.Tensor:
    """Objective of every direction ``v_k = q + t·e_k`` (k = 0..K−1) for each row, [B, K].

    Angular (``w`` the unit reference direction): ``‖v_k/‖v_k‖ − w‖² = 1 + ‖w‖² −
    2·v_k·w/‖v_k‖``; surrogate (``w`` None): ``‖v_k‖²``. ``‖v_k‖²`` and ``v_k·w`` come
    from exclusive sums in O(K) per row. Undefined values (zero direction) become −2, so
    they never improve the initial best of −1 but still follow position order.
    """
    n2 = _exclusive_sum(q * q) + (q + t).pow(2)
    if w is None:
        return n2
    dot = _exclusive_sum(q * w) + (q + t) * w
    obj = 1.0 + w.pow(2).sum(1, keepdim=True) - 2.0 * dot / n2.sqrt()
    return torch.nan_to_num(torch.where(n2 > 0, obj, torch.full_like(obj, float("nan"))), nan=-2.0)


def _oracle_extreme(y: torch.Tensor, p: torch.Tensor | None, objective: str) -> torch.Tensor:
    """The one-hot e_k with the largest objective (first on ties), §4.3."""
    if objective == "surrogate":
        obj = _shifted_unit_objective(-y, 1.0, None)  # v_k = e_k − y
    else:
        vy = y if p is None else p - y
        w = vy / vy.norm(dim=1, keepdim=True)
        q, t = (torch.zeros_like(y), 1.0) if p is None else (p, -1.0)  # v_k = e_k or p − e_k
        obj = _shifted_unit_objective(q, t, w)
    return F.one_hot(_first_best(obj), y.shape[1]).to(torch.float64)


def line_search(y: torch.Tensor, ystar: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Pull the target back into the ball (§4.4): ``α = clip(ε/(‖y − y*‖ + 1e-7), 0, 1)``,
    ``y' = (1 − α)·y + α·y*``. ``‖y' − y‖ = α‖y* − y‖ < ε`` always."""
    dist = row_distance(ystar, y, "l1" if norm == "l1" else "l2_linalg").unsqueeze(1)
    alpha = (eps / (dist + DENOM_GUARD)).clamp(0.0, 1.0)
    return (1.0 - alpha) * y + alpha * ystar


class MAD(Defense):
    """Maximizing Angular Deviation with the Jacobian-free shortcut of spec §4.2.

    ``xinfo(x)`` is the proxy's posterior ``p = softmax(f_A(x))`` (a K-vector, computed
    under no-grad in whatever train/eval mode the caller left the proxy in: spec §12.4
    leaves that choice to the pipeline). The angular objective built from the full
    Jacobian of ``−log p_k`` w.r.t. the last-layer weight equals the one built from ``p``
    alone (``tests/defense/test_mad.py`` checks this against torch.autograd), so the
    results are those of the original with ``max_grad_layer=None`` at K·F times less
    memory. Without xinfo the objective uses ``G = I`` (the original's ``get_yprime``
    fallback).

    Oracles (§4.3): ``argmax`` (the grid's, top-1 preserving) enumerates all 2^(K−1)
    vertices for K ≤ 10 and runs the 1024-evaluation greedy search for K > 10; ``extreme``
    (best one-hot) and ``argmin`` (one-hot at argmin y) do not keep the label. ``random`` and
    the LP oracles are not provided. Everything is batched over rows (the original needs
    batch size 1; its answers do not depend on the batch here) and computed in float64.
    The output then goes through the line search (§4.4), so ``‖y' − y‖_norm < eps``
    (in float64; the released dtype, ``release_dtype`` of the input, adds its rounding).
    With the argmax oracle the clean top class stays strictly first in the released dtype
    (:func:`~modelguard.defense.base.strict_top1`).

    Objective ties are decided by position (first candidate in the order of §4.3) with a
    1e-12 tolerance, not by round-off. If the objective is undefined for every candidate
    (the proxy posterior equals y exactly, a 0/0), the target is e_m; the original would
    crash there.

    Deterministic given ``(probs, xinfo)``: ``simulate == perturb``.
    """

    requires_xinfo = True

    def __init__(
        self,
        eps: float = 1.0,
        norm: str = "l1",
        oracle: str = "argmax",
        objective: str = "angular",
        proxy: torch.nn.Module | None = None,
    ):
        check_number(eps, "defense.eps", low=0, note="the utility budget ‖y' − y‖",
                     fix="set defense.eps=1.0")
        if norm not in NORMS:
            raise ValueError(f"defense.norm={norm!r} is invalid: norm must be one of {NORMS}; set defense.norm=l1")
        if oracle not in ORACLES:
            raise ValueError(
                f"defense.oracle={oracle!r} is invalid: oracle must be one of {ORACLES}; set defense.oracle=argmax"
            )
        if objective not in OBJECTIVES:
            raise ValueError(
                f"defense.objective={objective!r} is invalid: objective must be one of {OBJECTIVES}; "
                "set defense.objective=angular"
            )
        self.eps = float(eps)
        self.norm = norm
        self.oracle = oracle
        self.objective = objective
        self.top1_preserve = oracle == "argmax"
        if proxy is not None and not isinstance(proxy, torch.nn.Module):
            raise TypeError(f"MAD's proxy must be a torch.nn.Module, got {type(proxy).__name__}")
        self.proxy = proxy  # the defender's guess of the attacker's model (built by the pipeline)

    def to(self, device: torch.device | str) -> "MAD":
        if self.proxy is not None:
            self.proxy.to(device)
        return self

    def xinfo(self, x: torch.Tensor) -> torch.Tensor:
        if self.proxy is None:
            raise ValueError(
                "MAD.xinfo needs the proxy model: build MAD with proxy=model "
                "(instantiate(cfg.defense, proxy=model)) before querying"
            )
        with torch.no_grad():
            logits = self.proxy(x)
            return torch.softmax(logits.to(torch.float64), dim=1).to(logits.dtype)

    def _target(self, y: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        m = y.argmax(dim=1)
        if self.oracle == "argmin":
            return F.one_hot(y.argmin(dim=1), y.shape[1]).to(torch.float64)
        if self.oracle == "extreme":
            return _oracle_extreme(y, p, self.objective)
        if y.shape[1] <= EXHAUSTIVE_MAX_K:
            return _oracle_exhaustive(y, p, m, self.objective)
        return _oracle_greedy(y, p, m, self.objective)

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        y = probs.to(torch.float64)
        p = None
        if xinfo is not None and self.objective == "angular":
            if xinfo.dim() != 2 or xinfo.shape[1] != y.shape[1] or xinfo.shape[0] not in (1, y.shape[0]):
                raise ValueError(
                    f"MAD xinfo must be the proxy posteriors, shape [{y.shape[0]} or 1, {y.shape[1]}], got "
                    f"{tuple(xinfo.shape)}; pass xinfo=defense.xinfo(x) for the same inputs"
                )
            p = xinfo.to(device=y.device, dtype=torch.float64).expand_as(y)
        if y.shape[0] == 0:
            return probs.to(release_dtype(probs.dtype), copy=True)
        ystar = self._target(y, p)
        exact = line_search(y, ystar, self.eps, self.norm)
        out = exact.to(release_dtype(probs.dtype))
        if self.top1_preserve and out.dtype != exact.dtype:
            # y*'s bump makes the clean top strictly first in float64, by as little as
            # α·1e-5/K: rounding to float32 can merge it with the runner-up
            strict_top1(out, exact, y.argmax(dim=1))
        return out

    def original_jbda_eps(self) -> float | None:
        return float(self.eps)

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, norm={self.norm!r}, oracle={self.oracle!r}, objective={self.objective!r}, "
            f"proxy={'set' if self.proxy is not None else None}"
        )
