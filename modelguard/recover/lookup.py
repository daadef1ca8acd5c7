"""The Partial-Bayes lookup of the simulation table (defenses.md §10.1).

:class:`TableLookup` decodes released answers with the mean-of-neighbours rule of §10.1
from a table of (clean, perturbed) pairs built by :mod:`modelguard.recover.table`.
:func:`recover_reference` is a literal per-row loop of that rule, kept for tests and for
the throughput benchmark.
"""
from __future__ import annotations

import torch

from modelguard.defense.base import release_dtype
from modelguard.recover.base import Recoverer
from modelguard.utils.checks import check_flag, check_number
from modelguard.utils.rows import row_chunks, row_distance

_NORM_NAMES = {1: "l1", 2: "l2_linalg"}  # the lookup's p, as row_distance spells it


def _distance(a: torch.Tensor, b: torch.Tensor, norm: int) -> torch.Tensor:
    """‖a − b‖_p along the last dimension (p = ``norm``, 1 or 2): the distance of the lookup.

    :func:`~modelguard.utils.rows.row_distance` (L2 as ``torch.linalg.vector_norm``).
    The batched lookup and :func:`recover_reference` use it for every exact distance; a
    row reduction does not depend on how many rows there are, so the neighbour set
    {d_j ≤ τ} is the reference's even when entries tie at τ.
    """
    return row_distance(a, b, _NORM_NAMES[norm])


def _table_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a lookup computes in: float32 for half-precision tables (a distance
    summed in float16 errs by ~1e-3, a tenth of the default tolerance)."""
    return release_dtype(dtype) if dtype.is_floating_point else torch.float32


def recover_reference(
    table: tuple[torch.Tensor, torch.Tensor],
    released: torch.Tensor,
    norm: int = 1,
    tolerance: float = 0.01,
    top1_buckets: bool = True,
    return_counts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-row loop of the lookup, literally as defenses.md §10.1 states it.

    For each query q: candidates are the entries whose clean top-1 is argmax q (all
    entries when ``top1_buckets`` is False, or when no entry has that label: the guard the
    original lacks); d_j = ‖q − perturbed_j‖_p; τ = max(tolerance, min_j d_j); the output
    is the mean of clean_j over d_j ≤ τ. Half-precision tables are widened to float32, as
    :class:`TableLookup` does. With ``return_counts`` also the number of entries within τ
    per query (long [B]). Slow; for tests and benchmarks.
    """
    clean, perturbed = table
    dtype = _table_dtype(clean.dtype)
    clean, perturbed = clean.to(dtype), perturbed.to(dtype)
    top1 = clean.argmax(dim=1)
    out = torch.empty(released.shape[0], clean.shape[1], dtype=clean.dtype, device=clean.device)
    counts = torch.empty(released.shape[0], dtype=torch.long, device=clean.device)
    for r in range(released.shape[0]):
        q = released[r].to(perturbed)
        if top1_buckets:
            sel = top1 == q.argmax()
            if not bool(sel.any()):
                sel = torch.ones_like(sel)
            cand_p, cand_c = perturbed[sel], clean[sel]
        else:
            cand_p, cand_c = perturbed, clean
        d = _distance(cand_p, q, norm)
        tau = max(tolerance, float(d.min()))
        within = d <= tau
        out[r] = cand_c[within].mean(dim=0)
        counts[r] = within.sum()
    return (out, counts) if return_counts else out


class TableLookup(Recoverer):
    """Partial Bayes: mean of the clean entries whose perturbed companion lies within τ.

    ``norm`` is p of the lookup distance, ``tolerance`` the radius floor (paper: 1 and
    0.01). ``top1_buckets`` restricts the candidates to entries with the query's top-1 as
    clean label; set it from the defense's ``top1_preserve`` (False for AM). A query
    whose label no entry has falls back to the full table instead of crashing
    (attacks-and-training.md §12.7).

    ``recover`` runs the batched algorithm of §10.1: queries and table are bucketed by
    top-1; each bucket is processed in chunks of q queries with q · N_bucket ≤
    ``chunk_elements``. For every chunk the exact distances are computed, τ = max(tol,
    rowmin) and the masked mean is a 0/1 matrix product. For speed on the CPU each chunk
    first computes all squared L2 distances by one matrix product (Gram form) and uses
    them only to *prune*: since ‖·‖_p ≥ ‖·‖₂ for p ≤ 2, an entry whose L2 lower bound
    (with a slack that covers the Gram form's rounding) exceeds an upper bound of τ (the
    exact distance to the L2-nearest entry) cannot be within τ. The surviving pairs get
    exact distances; when too many survive, the chunk uses the dense
    ``torch.cdist`` (``compute_mode='donot_use_mm_for_euclid_dist'`` at p = 2, §12.17),
    and recomputes exactly the pairs whose cdist value lies within its rounding of τ (or
    of the row minimum that sets τ). "Exact" is the reference's arithmetic
    (:func:`recover_reference`), so both paths select the reference's neighbour set even
    where entries tie at τ (rounded, top-1 or quantized tables have many); the means then
    agree up to float32 rounding. A half-precision table is widened to float32.

    After each call ``last_mean_distance`` and ``last_std_distance`` hold the mean and the
    unbiased std over queries of each query's mean within-τ distance (the
    ``recover_distance`` log row of §10.1), and ``last_counts`` the number of entries each
    query's answer averages.
    """

    def __init__(
        self,
        norm: int = 1,
        tolerance: float = 0.01,
        top1_buckets: bool = True,
        chunk_elements: int = 2**26,
    ) -> None:
        if isinstance(norm, bool) or norm not in (1, 2):
            raise ValueError(f"recover.norm={norm!r} is invalid: norm must be 1 or 2 (p of the lookup "
                             "distance); set recover.norm=1 (the paper's value)")
        self.norm = int(norm)
        self.tolerance = check_number(tolerance, "recover.tolerance", low=0, note="the radius floor τ",
                                      fix="set recover.tolerance=0.01 (the paper's value)")
        self.top1_buckets = check_flag(top1_buckets, "recover.top1_buckets", fix="set recover.top1_buckets=true "
                                       "(search the query's top-1 bucket first, the paper's lookup)")
        self.chunk_elements = check_number(chunk_elements, "recover.chunk_elements", low=1, integer=True,
                                           note="the memory bound of one lookup chunk",
                                           fix="set recover.chunk_elements=67108864")
        self.clean: torch.Tensor | None = None
        self.perturbed: torch.Tensor | None = None
        self.clean_top1: torch.Tensor | None = None
        self.last_mean_distance: float = float("nan")
        self.last_std_distance: float = float("nan")
        self.last_distances: torch.Tensor | None = None
        self.last_counts: torch.Tensor | None = None
        self._buckets: dict[int, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"TableLookup(norm={self.norm}, tolerance={self.tolerance}, "
            f"top1_buckets={self.top1_buckets}, chunk_elements={self.chunk_elements})"
        )

    # -- fitting -------------------------------------------------------------------------

    def fit(self, clean: torch.Tensor, perturbed: torch.Tensor) -> "TableLookup":
        if clean.shape != perturbed.shape or clean.dim() != 2:
            raise ValueError(
                f"clean and perturbed must both be [N, K], got {tuple(clean.shape)} and "
                f"{tuple(perturbed.shape)}"
            )
        if clean.shape[0] == 0:
            raise ValueError("the recovery table is empty")
        self.clean = clean.detach().to(_table_dtype(clean.dtype))
        self.perturbed = perturbed.detach().to(self.clean.dtype)
        self.clean_top1 = self.clean.argmax(dim=1)
        self._buckets = {}
        if self.top1_buckets:
            order = torch.argsort(self.clean_top1, stable=True)
            labels, counts = torch.unique_consecutive(self.clean_top1[order], return_counts=True)
            for label, part in zip(labels.tolist(), torch.split(order, counts.tolist())):
                self._buckets[int(label)] = part
        return self

    # -- decoding ------------------------------------------------------------------------

    def recover(self, released: torch.Tensor) -> torch.Tensor:
        if self.clean is None or self.perturbed is None:
            raise RuntimeError("TableLookup.recover called before fit")
        dev = self.clean.device
        queries = released.detach().to(dev, self.clean.dtype)
        n_q, k = queries.shape
        out = torch.empty(n_q, k, dtype=self.clean.dtype, device=dev)
        mean_d = torch.empty(n_q, dtype=self.clean.dtype, device=dev)
        within = torch.empty(n_q, dtype=torch.long, device=dev)
        if self.top1_buckets:
            q_top1 = queries.argmax(dim=1)
            order = torch.argsort(q_top1, stable=True)
            labels, counts = torch.unique_consecutive(q_top1[order], return_counts=True)
            groups = []
            for label, rows in zip(labels.tolist(), torch.split(order, counts.tolist())):
                members = self._buckets.get(int(label))
                if members is None:  # empty bucket: fall back to the full table
                    groups.append((rows, None))
                else:
                    groups.append((rows, members))
        else:
            groups = [(torch.arange(n_q, device=dev), None)]
        for rows, members in groups:
            if members is None:
                p_b, c_b = self.perturbed, self.clean
            else:
                p_b, c_b = self.perturbed[members], self.clean[members]
            step = self.chunk_elements // max(p_b.shape[0], 1)
            for start, stop in row_chunks(rows.shape[0], step):
                r = rows[start:stop]
                o, m, n = self._lookup_chunk(queries[r], p_b, c_b)
                out[r] = o
                mean_d[r] = m
                within[r] = n
        self.last_distances = mean_d
        self.last_counts = within
        self.last_mean_distance = float(mean_d.mean()) if n_q else float("nan")
        self.last_std_distance = float(mean_d.std()) if n_q > 1 else float("nan")
        return out.to(released.device)

    def _lookup_chunk(
        self, q: torch.Tensor, p: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pruned = self._lookup_pruned(q, p, c)
        if pruned is not None:
            return pruned
        return self._lookup_dense(q, p, c)

    def _exact_pairs(self, q: torch.Tensor, p: torch.Tensor, qi: torch.Tensor, pj: torch.Tensor) -> torch.Tensor:
        """The reference's distance for the pairs (q[qi], p[pj]), in chunks within the budget."""
        step = max(1, self.chunk_elements // max(q.shape[1], 1))
        if qi.numel() <= step:
            return _distance(q[qi], p[pj], self.norm)
        return torch.cat([_distance(q[qi[a:b]], p[pj[a:b]], self.norm)
                          for a, b in row_chunks(qi.numel(), step)])

    def _lookup_dense(
        self, q: torch.Tensor, p: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All distances by ``torch.cdist``, made exact where it matters.

        cdist sums the same K non-negative terms as the reference (|q_j − p_j|, or their
        squares) in another order, so each value is within a relative ``rel`` = 2(K + 2)·eps
        of the reference's, and 0 exactly when the reference's is. Only two sets of pairs
        can be decided differently: those near the row minimum, when that minimum may
        exceed the tolerance and so set τ, and those within ``rel`` of τ. Both are
        recomputed with the reference's arithmetic (usually a handful per row).
        """
        nq, k = q.shape
        d = torch.cdist(q, p, p=float(self.norm), compute_mode="donot_use_mm_for_euclid_dist")
        rel = 2.0 * (k + 2) * torch.finfo(d.dtype).eps
        tol = torch.tensor(self.tolerance, dtype=d.dtype, device=d.device)
        dmin = d.amin(dim=1)
        tau = dmin.clamp_min(tol)
        # rows whose exact minimum may reach the tolerance (0 is exact: no recomputation)
        need = (dmin * (1.0 + rel) >= tol) & (dmin > 0)
        if bool(need.any()):
            rows = need.nonzero().squeeze(1)
            qi, pj = (d[rows] <= (dmin[rows] * (1.0 + 2.0 * rel))[:, None]).nonzero(as_tuple=True)
            qi = rows[qi]
            exact = self._exact_pairs(q, p, qi, pj)
            emin = torch.full((nq,), float("inf"), dtype=d.dtype, device=d.device)
            emin = emin.scatter_reduce(0, qi, exact, reduce="amin", include_self=True)
            tau[rows] = emin[rows].clamp_min(tol)
        mask = d <= (tau * (1.0 + rel))[:, None]
        # τ = 0 needs no band: cdist is 0 exactly where the reference is
        lower = torch.where(tau > 0, tau * (1.0 - rel), torch.full_like(tau, float("inf")))
        band = mask & (d >= lower[:, None])
        hit = band.view(torch.uint8).amax(dim=1)  # rows with pairs in the band (amax: fast)
        if bool(hit.any()):
            rows = hit.nonzero().squeeze(1)
            bi, bj = band[rows].nonzero(as_tuple=True)
            bi = rows[bi]
            mask[bi, bj] = self._exact_pairs(q, p, bi, bj) <= tau[bi]
        mask = mask.to(c.dtype)
        count = mask.sum(dim=1)
        out = (mask @ c) / count[:, None]
        mean_d = (d * mask).sum(dim=1) / count
        return out, mean_d, count.to(torch.long)

    def _lookup_pruned(
        self, q: torch.Tensor, p: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Exact lookup with a Gram-form L2 prefilter; None when pruning does not pay."""
        nq, k = q.shape
        qn = (q * q).sum(1)
        pn = (p * p).sum(1)
        sq = torch.addmm(pn[None, :], q, p.T, beta=1.0, alpha=-2.0).add_(qn[:, None])
        nearest = sq.argmin(dim=1)
        d_near = _distance(q, p[nearest], self.norm)
        tau_ub = d_near.clamp_min(self.tolerance)
        # The Gram form's rounding error is below γ·(‖q‖² + ‖p‖²) with γ ≈ (K + 4)·u (the
        # dot-product bound plus the two additions); twice that is the slack. The upper
        # bound of τ gets a relative margin for the rounding of the computed distances (a
        # sum of K terms: up to K·u relative, over 1e-5 in float32 from K = 168 on).
        eps = torch.finfo(q.dtype).eps
        slack = 2.0 * (k + 4) * eps * (qn + pn.max())
        bound = (tau_ub * (1.0 + max(1e-5, 2.0 * (k + 2) * eps))) ** 2 + slack
        cand = sq <= bound[:, None]
        del sq
        qi, pj = cand.nonzero(as_tuple=True)
        if qi.numel() * k > self.chunk_elements or qi.numel() * 4 > cand.numel():
            return None
        d = _distance(q[qi], p[pj], self.norm)
        rowmin = torch.full((nq,), float("inf"), dtype=d.dtype, device=d.device)
        rowmin = rowmin.scatter_reduce(0, qi, d, reduce="amin", include_self=True)
        tau = rowmin.clamp_min(self.tolerance)
        keep = d <= tau[qi]
        qi, pj, d = qi[keep], pj[keep], d[keep]
        count = torch.zeros(nq, dtype=c.dtype, device=c.device).index_add_(
            0, qi, torch.ones_like(d, dtype=c.dtype)
        )
        out = torch.zeros(nq, k, dtype=c.dtype, device=c.device).index_add_(0, qi, c[pj])
        out /= count[:, None]
        mean_d = torch.zeros(nq, dtype=d.dtype, device=d.device).index_add_(0, qi, d) / count
        return out, mean_d.to(c.dtype), count.to(torch.long)
