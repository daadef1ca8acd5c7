"""The simulation table of the adaptive attacks (defenses.md §9.1).

The adaptive attacker builds a table of (clean, perturbed) pairs offline:

1. :func:`dirichlet_table_clean` draws clean samples around the victim's clean posteriors
   on the attacker's own queries (§9.1 step 3; the "oracle prior" of
   attacks-and-training.md §12.4 is kept on purpose);
2. :func:`simulate_table` runs the defense's offline form on them in large batches
   (§9.1 step 4);
3. :func:`epsilon_filter` drops pairs farther apart than ε in L1 (§9.1 step 5,
   ModelGuard-S only).

The Partial-Bayes lookup that decodes released answers with the table (§10.1),
:class:`~modelguard.recover.lookup.TableLookup`, is in :mod:`modelguard.recover.lookup`
(still importable from here).
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from modelguard.defense.base import release_dtype
# the lookup, re-exported for conf/recover/table.yaml's _target_ and existing imports
from modelguard.recover.lookup import TableLookup, recover_reference  # noqa: F401
from modelguard.utils.rows import row_chunks, row_distance

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
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for start, stop in row_chunks(total, max_draw):
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
    device: torch.device | str | None = None,
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
    defenses answer in (float32 for a half-precision table, not rounded back to it), on the
    clean rows' device. ``device`` (e.g. the API's CUDA device) is where each chunk is simulated.
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
    with tqdm(total=n, desc="simulate table", unit="row", disable=not progress, leave=False) as bar:
        for start, stop in row_chunks(n, chunk):
            xi = None
            if xinfo is not None:
                xi = xinfo[start:stop] if index is None else xinfo[index[start:stop].to(xinfo.device)]
            rows = clean[start:stop]
            if device is not None:
                rows = rows.to(device, non_blocking=True)
                xi = None if xi is None else xi.to(device, non_blocking=True)
            out[start:stop] = fn(rows, xi).to(out.device)
            bar.update(stop - start)
    return out


def epsilon_keep_mask(clean: torch.Tensor, perturbed: torch.Tensor, eps: float) -> torch.Tensor:
    """Bool [N]: pairs with ‖clean − perturbed‖₁ ≤ ε (inclusive).

    Computed in float64 with the arithmetic of ModelGuard-S's own test
    (:func:`~modelguard.utils.rows.row_distance`), so for an L1 quantizer a pair
    is kept exactly when the frozen quantizer found a centroid within ε. In float32 the
    sum rounds by ~1e-7 and ε itself becomes float32(ε): a pair at distance ε from its
    centroid (which the quantizer accepted) could be dropped, and a fallback pair just
    beyond ε kept.
    """
    return row_distance(clean.to(torch.float64), perturbed.to(torch.float64), "l1") <= eps


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
