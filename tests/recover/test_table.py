"""Simulation table and Partial-Bayes lookup (defenses.md §9, §10.1, §10.4)."""
from __future__ import annotations

import warnings

import pytest
import torch

from modelguard.defense.base import Defense, check_probs, release_dtype
from modelguard.defense.reverse_sigmoid import ReverseSigmoid
from modelguard.defense.rounding import Rounding
from modelguard.defense.top1 import Top1
from modelguard.quantize.modelguard_s import ModelGuardS, row_distance
from modelguard.recover.lookup import TableLookup, recover_reference
from modelguard.recover.table import (
    dirichlet_table_clean,
    draws_per_row,
    epsilon_filter,
    epsilon_keep_mask,
    simulate_table,
)
from tests.realistic_rows import family_names, pipeline_params


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=1, keepdim=True)


def _random_table(k: int, n: int, n_q: int, seed: int, noise: float = 0.02):
    """Peaked clean rows, a mildly perturbed companion, queries near the table."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.softmax(3.0 * torch.randn(n, k, generator=g), dim=1)
    perturbed = _normalize(clean.sqrt() + noise * torch.rand(n, k, generator=g))
    src = torch.randint(0, n, (n_q,), generator=g)
    queries = _normalize(perturbed[src] + noise * torch.rand(n_q, k, generator=g))
    return clean, perturbed, queries


# ---------------------------------------------------------------------------------------
# batched lookup == per-row reference
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 10, 100])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("tolerance", [1e-4, 0.01, 0.2])
@pytest.mark.parametrize("top1_buckets", [True, False])
def test_batched_equals_reference(k, norm, tolerance, top1_buckets):
    clean, perturbed, queries = _random_table(k, 1500, 120, seed=k * 7 + norm)
    # small chunk budget so buckets are split into several chunks
    look = TableLookup(norm=norm, tolerance=tolerance, top1_buckets=top1_buckets, chunk_elements=20_000)
    out = look.fit(clean, perturbed).recover(queries)
    ref = recover_reference((clean, perturbed), queries, norm, tolerance, top1_buckets)
    assert out.shape == queries.shape
    assert (out - ref).abs().max().item() <= 1e-6
    assert torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-5)
    assert look.last_mean_distance >= 0


@pytest.mark.parametrize("norm", [1, 2])
def test_dense_and_pruned_paths_agree(norm):
    clean, perturbed, queries = _random_table(10, 3000, 200, seed=3)
    look = TableLookup(norm=norm, tolerance=0.01).fit(clean, perturbed)
    p, c = look.perturbed, look.clean
    dense = look._lookup_dense(queries, p, c)
    pruned = look._lookup_pruned(queries, p, c)
    assert pruned is not None
    assert (dense[0] - pruned[0]).abs().max() <= 1e-6
    assert (dense[1] - pruned[1]).abs().max() <= 1e-6


def test_empty_bucket_falls_back_to_full_table():
    k = 10
    clean, perturbed, _ = _random_table(k, 800, 1, seed=5)
    keep = clean.argmax(1) != 3  # no entry with clean label 3
    clean, perturbed = clean[keep], perturbed[keep]
    g = torch.Generator().manual_seed(1)
    queries = _normalize(torch.rand(40, k, generator=g))
    queries[:10, 3] = 5.0  # these land in the empty bucket
    queries = _normalize(queries)
    look = TableLookup(norm=1, tolerance=0.01).fit(clean, perturbed)
    out = look.recover(queries)
    ref = recover_reference((clean, perturbed), queries, 1, 0.01, True)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-6
    # the empty-bucket queries use the full table: same as a one-bucket lookup
    flat = TableLookup(norm=1, tolerance=0.01, top1_buckets=False).fit(clean, perturbed)
    assert (out[:10] - flat.recover(queries[:10])).abs().max() <= 1e-6


@pytest.mark.parametrize("norm", [1, 2])
def test_queries_on_table_entries(norm):
    clean, perturbed, _ = _random_table(10, 1000, 1, seed=9)
    queries = perturbed[::37].clone()
    look = TableLookup(norm=norm, tolerance=1e-9).fit(clean, perturbed)
    out = look.recover(queries)
    ref = recover_reference((clean, perturbed), queries, norm, 1e-9, True)
    assert (out - ref).abs().max() <= 1e-6
    # with a tiny tolerance an exact hit returns its own clean row (no duplicates here)
    assert (out - clean[::37]).abs().max() <= 1e-6
    assert look.last_mean_distance == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("norm", [1, 2])
def test_ties_at_tau_are_inclusive(norm):
    # dyadic values: every distance is exact in float32, so ties at τ are real ties
    k = 4
    q = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    d = 0.125
    shifts = [
        [0.0, 0.0, 0.0, 0.0],  # distance 0
        [d / 2, -d / 2, 0.0, 0.0],  # L1 d, L2 d/√2
        [d, -d, 0.0, 0.0],  # L1 2d
        [0.0, 0.0, d / 2, -d / 2],
    ]
    perturbed = q + torch.tensor(shifts)
    clean = torch.tensor(
        [[0.625, 0.125, 0.125, 0.125], [0.5, 0.25, 0.125, 0.125], [0.75, 0.125, 0.0625, 0.0625], [0.5, 0.5, 0.0, 0.0]]
    )
    tau = d if norm == 1 else float(torch.tensor(d / 2 * 2**0.5))
    look = TableLookup(norm=norm, tolerance=tau).fit(clean, perturbed)
    out = look.recover(q)
    ref = recover_reference((clean, perturbed), q, norm, tau, True)
    assert torch.equal(out, ref) or (out - ref).abs().max() <= 1e-7
    # rows 0, 1, 3 are within τ (1 and 3 exactly at τ), row 2 is outside
    assert torch.allclose(out[0], clean[[0, 1, 3]].mean(0), atol=1e-7)


def test_tolerance_floor_and_nearest_neighbour():
    clean, perturbed, queries = _random_table(10, 500, 50, seed=11)
    tiny = TableLookup(norm=1, tolerance=0.0, top1_buckets=False).fit(clean, perturbed)
    out = tiny.recover(queries)
    # τ = rowmin: the output is the (unique) nearest neighbour's clean row
    nn = torch.cdist(queries, perturbed, p=1).argmin(1)
    assert (out - clean[nn]).abs().max() <= 1e-6


def test_recover_before_fit_raises():
    with pytest.raises(RuntimeError):
        TableLookup().recover(torch.full((2, 3), 1 / 3))


# ---------------------------------------------------------------------------------------
# Dirichlet sampler
# ---------------------------------------------------------------------------------------


def test_draws_per_row_rules():
    assert draws_per_row(100, 10).tolist() == [10] * 10
    assert draws_per_row(23, 10).tolist() == [3, 3, 3] + [2] * 7
    assert draws_per_row(4, 10).tolist() == [1] * 4 + [0] * 6
    assert draws_per_row(23, 10, "drop").tolist() == [2] * 10
    assert draws_per_row(4, 10, "drop").sum() == 0
    with pytest.raises(ValueError):
        draws_per_row(4, 10, "bogus")


def test_dirichlet_shapes_and_index_tagging():
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(torch.randn(7, 5, generator=g), 1)
    clean, index = dirichlet_table_clean(y, 30, 8.0, g, max_draw=4)
    assert clean.shape == (30, 5) and index.shape == (30,) and index.dtype == torch.long
    assert index.tolist() == sorted(index.tolist())  # input order, grouped by row
    assert torch.bincount(index, minlength=7).tolist() == [5, 5] + [4] * 5
    assert torch.allclose(clean.sum(1), torch.ones(30), atol=1e-5)
    assert (clean >= 0).all()
    clean_drop, index_drop = dirichlet_table_clean(y, 30, 8.0, g, remainder="drop")
    assert clean_drop.shape == (28, 5) and torch.bincount(index_drop).tolist() == [4] * 7
    empty, empty_index = dirichlet_table_clean(y, 5, 8.0, g, remainder="drop")
    assert empty.shape == (0, 5) and empty_index.numel() == 0


def test_dirichlet_centred_on_rows():
    y = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    clean, index = dirichlet_table_clean(y, 40_000, 100.0, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.allclose(clean[index == i].mean(0), y[i], atol=0.01)


def test_dirichlet_determinism_and_global_rng_untouched():
    y = torch.softmax(torch.randn(6, 4), 1)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, ia = dirichlet_table_clean(y, 60, 4.0, torch.Generator().manual_seed(5), max_draw=7)
    after = torch.rand(3)
    b, ib = dirichlet_table_clean(y, 60, 4.0, torch.Generator().manual_seed(5), max_draw=7)
    c, _ = dirichlet_table_clean(y, 60, 4.0, torch.Generator().manual_seed(6), max_draw=7)
    assert torch.equal(before, after)  # the global stream is restored
    assert torch.equal(a, b) and torch.equal(ia, ib)
    assert not torch.equal(a, c)
    # max_draw only splits the work: the samples may differ (one RNG stream consumed in
    # different pieces) but the shapes and tags agree
    d, idd = dirichlet_table_clean(y, 60, 4.0, torch.Generator().manual_seed(5))
    assert d.shape == a.shape and torch.equal(idd, ia)


def test_dirichlet_alpha_clamp_with_zeros():
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    clean, _ = dirichlet_table_clean(y, 200, 8.0, torch.Generator().manual_seed(2))
    assert torch.isfinite(clean).all()
    assert torch.allclose(clean.sum(1), torch.ones(200), atol=1e-5)
    assert clean[:100, 0].min() > 0.99  # α = (32, 1e-8, 1e-8, 1e-8)


# ---------------------------------------------------------------------------------------
# simulate_table and the ε filter
# ---------------------------------------------------------------------------------------


class _XinfoDefense(Defense):
    """Mixes every row with its x-info row: the answer depends on which row it got."""

    requires_xinfo = True

    def __init__(self) -> None:
        self.calls = 0

    def perturb(self, probs, xinfo=None):
        self.calls += 1
        assert xinfo is not None and xinfo.shape == probs.shape
        return 0.5 * probs + 0.5 * xinfo


def test_simulate_table_chunking_and_xinfo_rows():
    g = torch.Generator().manual_seed(4)
    y = torch.softmax(torch.randn(9, 6, generator=g), 1)
    xinfo = torch.softmax(torch.randn(9, 6, generator=g), 1)
    clean, index = dirichlet_table_clean(y, 95, 8.0, g)
    defense = _XinfoDefense()
    small = simulate_table(clean, defense, index=index, xinfo=xinfo, chunk=7, progress=False)
    assert defense.calls == 14
    big = simulate_table(clean, defense, index=index, xinfo=xinfo, chunk=10**6, progress=False)
    assert torch.equal(small, big)
    assert torch.allclose(small, 0.5 * clean + 0.5 * xinfo[index])


def test_simulate_table_callable_without_xinfo():
    clean = torch.softmax(torch.randn(50, 3), 1)
    seen = []

    def fn(p, xi):
        seen.append(xi)
        return _normalize(p.sqrt())

    out = simulate_table(clean, fn, chunk=16, progress=False)
    assert torch.allclose(out, _normalize(clean.sqrt()))
    assert seen == [None] * 4
    # per-row x-info without an index
    xinfo = torch.softmax(torch.randn(50, 3), 1)
    mixed = simulate_table(clean, lambda p, xi: xi, xinfo=xinfo, chunk=16, progress=False)
    assert torch.equal(mixed, xinfo)


def test_epsilon_filter():
    clean = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25], [0.0, 1.0]])
    perturbed = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.25, 0.75], [0.25, 0.75]])
    # L1 distances: 0, 2, 1, 0.5
    assert epsilon_keep_mask(clean, perturbed, 1.0).tolist() == [True, False, True, True]
    c, p = epsilon_filter(clean, perturbed, 0.5)
    assert torch.equal(c, clean[[0, 3]]) and torch.equal(p, perturbed[[0, 3]])


# ---------------------------------------------------------------------------------------
# the rows a victim really hands over (tests/realistic_rows.py)
# ---------------------------------------------------------------------------------------


def _base_rows(K: int, pipeline_rows) -> torch.Tensor:
    return pipeline_rows(K, "lenet_test" if K == 10 else f"softmax_f32_K{K}")


def _pipeline_defense(name: str, base: torch.Tensor):
    """A defense's offline form, for tables whose distances tie a lot (one-hots, rounded
    values, shared centroids) or not at all (Reverse Sigmoid)."""
    if name == "modelguard_s":
        q = ModelGuardS(eps=0.5)
        q.quantize(base)
        return q
    return {"top1": Top1(), "rounding1": Rounding(1), "rounding2": Rounding(2),
            "reverse_sigmoid": ReverseSigmoid()}[name]


def _simulate(defense, rows: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ModelGuard-S: classes without centroids
        return defense.simulate(rows)


@pytest.mark.parametrize("defense_name", ["top1", "rounding1", "rounding2", "modelguard_s", "reverse_sigmoid"])
@pytest.mark.parametrize("K", [10, 100])
def test_pipeline_tables_batched_equals_reference(K, defense_name, pipeline_rows):
    # a Dirichlet table around the float32 victim rows, every pipeline family as queries
    # (their released answers, first 40 rows); the batched lookup must pick the loop's
    # neighbour set exactly (ties at τ included), so counts are equal and the means agree
    # to float32 rounding
    base = _base_rows(K, pipeline_rows)
    defense = _pipeline_defense(defense_name, base)
    clean, _ = dirichlet_table_clean(base, 1500, 8.0, torch.Generator().manual_seed(K))
    perturbed = simulate_table(clean, lambda p, xi: _simulate(defense, p), progress=False)
    queries = torch.cat([_simulate(defense, pipeline_rows(K, f)[:40]).float() for f in family_names(K)])
    for norm in (1, 2):
        for top1_buckets in (True, False):
            look = TableLookup(norm=norm, tolerance=0.01, top1_buckets=top1_buckets, chunk_elements=40_000)
            out = look.fit(clean, perturbed).recover(queries)
            ref = recover_reference((clean, perturbed), queries, norm, 0.01, top1_buckets)
            assert out.dtype == torch.float32 and not torch.isnan(out).any()
            assert (out - ref).abs().max() <= 1e-6
            _, counts = recover_reference((clean, perturbed), queries, norm, 0.01, top1_buckets, return_counts=True)
            assert torch.equal(look.last_counts, counts)
            assert torch.allclose(out.double().sum(1), torch.ones(len(out), dtype=torch.float64), atol=1e-5)
    # both paths of a chunk, on the whole table (no buckets), against the loop
    look = TableLookup(norm=1, tolerance=0.01).fit(clean, perturbed)
    ref = recover_reference((clean, perturbed), queries, 1, 0.01, False)
    for path in (look._lookup_dense, look._lookup_pruned):
        res = path(queries, look.perturbed, look.clean)
        if res is not None:  # the pruned path declines when too many pairs survive
            assert (res[0] - ref).abs().max() <= 1e-6
    _, counts = recover_reference((clean, perturbed), queries, 1, 0.01, False, return_counts=True)
    assert torch.equal(look._lookup_dense(queries, look.perturbed, look.clean)[2], counts)
    pruned = look._lookup_pruned(queries, look.perturbed, look.clean)
    if pruned is not None:
        assert torch.equal(pruned[2], counts)


@pytest.mark.parametrize("norm", [1, 2])
def test_dense_lookup_decides_ties_at_tau_like_the_reference(norm):
    # rounded table: distances between rounded vectors are sums of multiples of 0.01, so
    # many entries lie at the same distance as the row minimum up to the last float32 bit,
    # and cdist (another summation order) put some on the other side of τ than the loop's
    # arithmetic did: answers 0.04 apart at K = 10, 0.2 at K = 100
    g = torch.Generator().manual_seed(0)
    for k in (10, 100):
        clean = torch.softmax(3.0 * torch.randn(3000, k, generator=g), 1)
        perturbed = Rounding(2).perturb(clean)
        queries = Rounding(2).perturb(torch.softmax(3.0 * torch.randn(200, k, generator=g), 1))
        look = TableLookup(norm=norm, tolerance=0.01).fit(clean, perturbed)
        ref = recover_reference((clean, perturbed), queries, norm, 0.01, False)
        res = look._lookup_dense(queries, look.perturbed, look.clean)
        assert (res[0] - ref).abs().max() <= 1e-6
        _, counts = recover_reference((clean, perturbed), queries, norm, 0.01, False, return_counts=True)
        assert torch.equal(res[2], counts)


@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
def test_dirichlet_table_on_pipeline_rows(K, family, pipeline_rows):
    y = pipeline_rows(K, family)
    clean, index = dirichlet_table_clean(y, 3 * y.shape[0] + 1, 8.0, torch.Generator().manual_seed(3))
    assert clean.dtype == release_dtype(y.dtype)  # draws are float32: never rounded to half
    assert clean.shape == (3 * y.shape[0] + 1, K) and torch.equal(index, torch.sort(index).values)
    check_probs(clean)  # every draw is a valid probability row (zeros, ties, 1e-30 inputs)
    again, _ = dirichlet_table_clean(y, 3 * y.shape[0] + 1, 8.0, torch.Generator().manual_seed(3))
    assert torch.equal(clean, again)
    # half-precision rows draw exactly what their float32 values draw
    if y.dtype in (torch.float16, torch.bfloat16):
        wide, _ = dirichlet_table_clean(y.float(), 3 * y.shape[0] + 1, 8.0, torch.Generator().manual_seed(3))
        assert torch.equal(clean, wide)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tables_are_widened(dtype, pipeline_rows):
    base = _base_rows(10, pipeline_rows)
    clean = dirichlet_table_clean(base, 1000, 8.0, torch.Generator().manual_seed(1))[0].to(dtype)
    q = ModelGuardS(eps=0.5)
    q.quantize(base)
    perturbed = simulate_table(clean, lambda p, xi: _simulate(q, p), progress=False)
    assert perturbed.dtype == torch.float32  # the quantizer's answers, not rounded back to half
    assert torch.equal(perturbed, _simulate(q, clean))
    queries = _simulate(q, pipeline_rows(10, "half_float16")[:50])
    look = TableLookup(norm=1, tolerance=0.01).fit(clean, perturbed)
    out = look.recover(queries)
    wide = TableLookup(norm=1, tolerance=0.01).fit(clean.float(), perturbed).recover(queries)
    assert out.dtype == torch.float32 and torch.equal(out, wide)
    ref, counts = recover_reference((clean, perturbed), queries, 1, 0.01, True, return_counts=True)
    assert (out - ref).abs().max() <= 1e-6 and torch.equal(look.last_counts, counts)


@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
def test_epsilon_filter_agrees_with_the_quantizer(K, family, pipeline_rows):
    # the ModelGuard-S table filter keeps exactly the pairs the frozen quantizer answered
    # within eps (its own float64 test), for a codebook grown on the family's rows
    y = pipeline_rows(K, family)
    q = ModelGuardS(eps=0.3)
    q.quantize(y)
    clean, _ = dirichlet_table_clean(y, 2000, 8.0, torch.Generator().manual_seed(2))
    perturbed = simulate_table(clean, lambda p, xi: _simulate(q, p), progress=False)
    own = row_distance(perturbed.double(), clean.double(), "l1") <= q.eps
    assert torch.equal(epsilon_keep_mask(clean, perturbed, q.eps), own)


def test_epsilon_filter_keeps_a_pair_at_exactly_eps(pipeline_rows):
    # eps equal to a pair's float64 distance: the quantizer answers the row with that
    # centroid (within eps), but the float32 sum of |clean − centroid| rounds above
    # float32(eps), so a float32 filter dropped the pair
    rows = pipeline_rows(10, "lenet_pool")
    cls = rows.argmax(1)
    found = None
    for i in range(rows.shape[0]):
        for j in torch.nonzero(cls == cls[i]).squeeze(1).tolist():
            if j <= i:
                continue
            d64 = float(row_distance(rows[i].double(), rows[j].double(), "l1"))
            if float((rows[j] - rows[i]).abs().sum()) > float(torch.tensor(d64, dtype=torch.float32)):
                found = (i, j, d64)
                break
        if found:
            break
    assert found is not None
    i, j, eps = found
    q = ModelGuardS(eps=eps)
    q.quantize(rows[i:i + 1])  # the class's first centroid
    answer = _simulate(q, rows[j:j + 1])
    assert torch.equal(answer, rows[i:i + 1])  # within eps: the quantizer kept it
    assert bool(epsilon_keep_mask(rows[j:j + 1], answer, eps).all())


def test_lookup_reexported_from_table_and_argument_errors():
    from modelguard.recover import table

    assert table.TableLookup is TableLookup and table.recover_reference is recover_reference
    for kwargs, match in ((dict(norm=3), r"recover.norm=3 is invalid"),
                          (dict(norm=True), r"recover.norm=True is invalid"),
                          (dict(tolerance=-0.1), r"recover.tolerance=-0.1 is invalid: .*≥ 0"),
                          (dict(tolerance=float("nan")), r"recover.tolerance=nan is invalid"),
                          (dict(chunk_elements=0), r"recover.chunk_elements=0 is invalid: .*integer ≥ 1")):
        with pytest.raises(ValueError, match=match):
            TableLookup(**kwargs)


def test_simulate_table_on_a_named_device_returns_rows_where_the_table_is():
    g = torch.Generator().manual_seed(5)
    clean, index = dirichlet_table_clean(torch.softmax(torch.randn(6, 4, generator=g), 1), 40, 8.0, g)
    defense = _XinfoDefense()
    xinfo = torch.softmax(torch.randn(6, 4, generator=g), 1)
    here = simulate_table(clean, defense, index=index, xinfo=xinfo, chunk=16, progress=False)
    named = simulate_table(clean, defense, index=index, xinfo=xinfo, chunk=16, progress=False, device="cpu")
    assert torch.equal(here, named) and named.device == clean.device
