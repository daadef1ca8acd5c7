"""Simulation table and the Partial-Bayes lookup (defenses.md §9 and §10.1).

The adaptive attacker builds a table of (clean, perturbed) pairs offline:

1. :func:`dirichlet_table_clean` draws clean samples around the victim's clean posteriors
   on the attacker's own queries (§9.1 step 3; the "oracle prior" of
   attacks-and-training.md §12.4 is kept on purpose);
2. :func:`simulate_table` runs the defense's offline form on them in large batches
   (§9.1 step 4);
3. :func:`epsilon_filter` drops pairs farther apart than ε in L1 (§9.1 step 5,
   ModelGuard-S only).

:class:`TableLookup` then decodes released answers with the mean-of-neighbours rule of
§10.1. :func:`recover_reference` is a literal per-row loop of that rule, kept for tests and
for the throughput benchmark.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from modelguard.defense.base import release_dtype
from modelguard.recover.base import Recoverer

ALPHA_MIN = 1e-8
"""Floor on the Dirichlet concentration: float32 softmax outputs can underflow to 0,
and Dir(α) needs α > 0 (attacks-and-training.md §12.8)."""


# ---------------------------------------------------------------------------------------
# Table of clean samples
# ---------------------------------------------------------------------------------------


def draws_per_row(size: int, rows: int, remainder: str = "spread") -> torch.Tensor:
    """How many Dirichlet samples each of ``rows`` estimation rows gets for a table of ``size``.

    ``remainder="spread"`` (our default) gives every row ⌊size/rows⌋ samples and the
    first ``size mod rows`` rows one more, so the table has exactly ``size`` entries and
    no row gets more than one sample above any other. It equals the original's count
    whenever ``rows`` divides ``size`` (the grid: 1e6 / 50,000 = 20), and it still draws
    something when ``size < rows``.

    ``remainder="drop"`` is the original's rule (defenses.md §12.16): ⌊size/rows⌋ per row,
    the remainder silently dropped, nothing drawn when ``size < rows``.
    """
    if rows <= 0 or size <= 0:
        return torch.zeros(max(rows, 0), dtype=torch.long)
    base, extra = divmod(int(size), int(rows))
    counts = torch.full((rows,), base, dtype=torch.long)
    if remainder == "spread":
        counts[:extra] += 1
    elif remainder != "drop":
        raise ValueError(f"remainder must be 'spread' or 'drop', got {remainder!r}")
    return counts


def _seed_from(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def dirichlet_table_clean(
    y_true: torch.Tensor,
    size: int,
    concentration_factor: float,
    generator: torch.Generator | None = None,
    max_draw: int = 5_000_000,
    remainder: str = "spread",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean table samples around the estimation posteriors (defenses.md §9.1 step 3).

    Row i of ``y_true`` ([|X|, K], the victim's clean posteriors on the attacker's
    queries) gives α_i = max(y_true_i · K · cf, 1e-8), and its samples are drawn from
    Dir(α_i). The draws are grouped by estimation row, in input order: all samples of
    row 0, then row 1, and so on; ``index`` tags every sample with its row. The number
    of samples per row follows :func:`draws_per_row` (``remainder``); with the default
    the table has exactly ``size`` rows. Draws are made ``max_draw`` samples at a time.

    Seeding: torch's Dirichlet sampler (``torch._sample_dirichlet``, used by
    ``torch.distributions.Dirichlet``) takes no generator and reads the global CPU RNG.
    We draw one 62-bit seed from ``generator``, then sample inside
    ``torch.random.fork_rng(devices=[])`` after seeding the global CPU generator with it,
    so the caller's global RNG state is restored afterwards and the same ``generator``
    state gives the same table. Sampling is done on the CPU in float32; the result is moved
    back to ``y_true``'s device, in ``release_dtype`` of its dtype (float32 for half
    precision: rounding the draws to float16 would only lose what was drawn).

    Returns ``(clean [size, K], index [size] long)``.
    """
    if y_true.dim() != 2:
        raise ValueError(f"y_true must be [rows, classes], got shape {tuple(y_true.shape)}")
    rows, k = y_true.shape
    device = y_true.device
    dtype = release_dtype(y_true.dtype) if y_true.is_floating_point() else torch.float32
    counts = draws_per_row(size, rows, remainder)
    total = int(counts.sum())
    index = torch.repeat_interleave(torch.arange(rows), counts)
    if total == 0:
        return torch.empty(0, k, dtype=dtype, device=device), index.to(device)
    alpha = (y_true.detach().to("cpu", torch.float32) * (k * float(concentration_factor))).clamp_min(ALPHA_MIN)
    seed = _seed_from(generator)
    clean = torch.empty(total, k, dtype=torch.float32)
    step = max(int(max_draw), 1)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for start in range(0, total, step):
            stop = min(start + step, total)
            clean[start:stop] = torch._sample_dirichlet(alpha[index[start:stop]])
    return clean.to(device=device, dtype=dtype), index.to(device)


# ---------------------------------------------------------------------------------------
# Perturbed companions and the ε filter
# ---------------------------------------------------------------------------------------


def simulate_table(
    clean: torch.Tensor,
    simulate_fn: Callable[..., torch.Tensor],
    index: torch.Tensor | None = None,
    xinfo: torch.Tensor | None = None,
    chunk: int = 65536,
    progress: bool = True,
) -> torch.Tensor:
    """The defense's offline answers for every clean table row (defenses.md §9.1 step 4).

    ``simulate_fn`` is a defense (its ``simulate`` method is used) or any callable
    ``f(probs, xinfo) -> perturbed``. Rows go through it ``chunk`` at a time, so a batched
    defense does the work in a few large calls and no worker processes are needed.

    When ``xinfo`` is given, row r of the table is simulated with ``xinfo[index[r]]``: the
    side information of the estimation input the sample was drawn for (the MAD proxy's
    posterior, the AM misinformation output). Without ``index``, ``xinfo`` must have one
    row per table row.

    The answers are stored in ``release_dtype`` of the clean rows' dtype, the dtype the
    defenses answer in (float32 for a half-precision table, not rounded back to it).
    """
    fn = simulate_fn.simulate if hasattr(simulate_fn, "simulate") else simulate_fn
    n = clean.shape[0]
    if xinfo is not None:
        if index is None:
            if xinfo.shape[0] != n:
                raise ValueError("without index, xinfo needs one row per table row")
        elif index.shape[0] != n:
            raise ValueError("index needs one entry per table row")
    out = torch.empty(clean.shape, dtype=release_dtype(clean.dtype), device=clean.device)
    step = max(int(chunk), 1)
    with tqdm(total=n, desc="simulate table", unit="row", disable=not progress, leave=False) as bar:
        for start in range(0, n, step):
            stop = min(start + step, n)
            xi = None
            if xinfo is not None:
                xi = xinfo[start:stop] if index is None else xinfo[index[start:stop].to(xinfo.device)]
            out[start:stop] = fn(clean[start:stop], xi)
            bar.update(stop - start)
    return out


def epsilon_keep_mask(clean: torch.Tensor, perturbed: torch.Tensor, eps: float) -> torch.Tensor:
    """Bool [N]: pairs with ‖clean − perturbed‖₁ ≤ ε (inclusive).

    Computed in float64 with the arithmetic of ModelGuard-S's own test
    (:func:`~modelguard.quantize.modelguard_s.row_distance`), so for an L1 quantizer a pair
    is kept exactly when the frozen quantizer found a centroid within ε. In float32 the
    sum rounds by ~1e-7 and ε itself becomes float32(ε): a pair at distance ε from its
    centroid (which the quantizer accepted) could be dropped, and a fallback pair just
    beyond ε kept.
    """
    diff = clean.to(torch.float64) - perturbed.to(torch.float64)
    return diff.abs().sum(dim=1) <= eps


def epsilon_filter(
    clean: torch.Tensor, perturbed: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ModelGuard-S table filter (defenses.md §9.1 step 5).

    Keeps the pairs with ‖clean − perturbed‖₁ ≤ ε, i.e. drops the entries the frozen
    quantizer sent to a centroid farther than ε (its nearest-centroid fallback). The norm
    is always L1 (``perturb_norm = 1``), whatever the quantizer's own ``ydist``. Use
    :func:`epsilon_keep_mask` to filter companions such as the row index.
    """
    keep = epsilon_keep_mask(clean, perturbed, eps)
    return clean[keep], perturbed[keep]


# ---------------------------------------------------------------------------------------
# Partial-Bayes lookup
# ---------------------------------------------------------------------------------------


def _row_distance(points: torch.Tensor, query: torch.Tensor, norm: int) -> torch.Tensor:
    """‖points_j − query‖_p for every row j: the distance primitive of the lookup.

    The batched lookup gets the same bits for every pair (``_row_distance_pairs`` is this
    arithmetic on aligned rows; a row reduction does not depend on how many rows there
    are), so the neighbour set {d_j ≤ τ} is the reference's even when entries tie at τ.
    """
    diff = points - query
    if norm == 1:
        return diff.abs().sum(dim=1)
    return torch.linalg.vector_norm(diff, ord=norm, dim=1)


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
        d = _row_distance(cand_p, q, norm)
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
        if norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {norm}")
        self.norm = int(norm)
        self.tolerance = float(tolerance)
        self.top1_buckets = bool(top1_buckets)
        self.chunk_elements = int(chunk_elements)
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
            step = max(1, self.chunk_elements // max(p_b.shape[0], 1))
            for start in range(0, rows.shape[0], step):
                r = rows[start:start + step]
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
            return _row_distance_pairs(q[qi], p[pj], self.norm)
        return torch.cat([_row_distance_pairs(q[qi[s:s + step]], p[pj[s:s + step]], self.norm)
                          for s in range(0, qi.numel(), step)])

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
        d_near = _row_distance_pairs(q, p[nearest], self.norm)
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
        d = _row_distance_pairs(q[qi], p[pj], self.norm)
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


def _row_distance_pairs(a: torch.Tensor, b: torch.Tensor, norm: int) -> torch.Tensor:
    diff = a - b
    if norm == 1:
        return diff.abs().sum(dim=1)
    return torch.linalg.vector_norm(diff, ord=norm, dim=1)
