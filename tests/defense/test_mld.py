"""ModelGuard-W (spec §6): the exact batched solver against the spec's table and against CBC."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.defense.mld import ModelGuardW
from modelguard.defense.mld_lp import solve_mld_lp
from modelguard.defense.mld_solver import min_feasible_eps, solve_mld

MU = 1e-4
DELTA = 1e-6


def _cost(y: torch.Tensor) -> torch.Tensor:
    return torch.log(y.to(torch.float64) + DELTA)


def _violation(y: torch.Tensor, out: torch.Tensor, eps) -> float:
    """Largest violation of any LP constraint of spec §6.2, per batch."""
    y = y.to(torch.float64)
    out = out.to(torch.float64)
    B, K = y.shape
    e = eps if torch.is_tensor(eps) else torch.full((B,), float(eps), dtype=torch.float64)
    m = y.argmax(1)
    top = out.gather(1, m[:, None])
    others = torch.ones_like(out, dtype=torch.bool).scatter_(1, m[:, None], False)
    margin = torch.where(others, MU - (top - out), torch.full_like(out, -1.0)).max(1).values
    return max(
        float((out.sum(1) - 1).abs().max()),
        float((-out).max()),
        float((out - 1).max()),
        float(((out - y).abs().sum(1) - e).max()),
        float(margin.max()),
    )


def _peaked(rng, K, n=1):
    logits = torch.from_numpy(rng.normal(0.0, 6.0, size=(n, K)))
    return torch.softmax(logits, 1)


def _flat(rng, K, n=1):
    return torch.from_numpy(rng.dirichlet(np.full(K, 10.0), size=n))


# ---------------------------------------------------------------------------------------------
# (a) spec §6.3 table

TABLE = [
    # y, eps, optimal y' (None where every feasible point is optimal)
    ((0.9, 0.05, 0.03, 0.02), 1.0, (0.4, 0.05, 0.1501, 0.3999)),
    ((0.9, 0.05, 0.03, 0.02), 0.5, (0.65, 0.05, 0.03, 0.27)),
    ((0.5, 0.3, 0.1, 0.1), 1.0, (0.3334, 0.0, 0.3333, 0.3333)),
    ((0.4, 0.35, 0.25), 2.0, (0.50005, 0.0, 0.49995)),
    ((0.6, 0.4), 1.0, (0.50005, 0.49995)),
    ((0.5, 0.5), 0.1, (0.50005, 0.49995)),
]


@pytest.mark.parametrize("y,eps,expected", TABLE)
def test_spec_table(y, eps, expected):
    Y = torch.tensor([y], dtype=torch.float64)
    out, obj = solve_mld(Y, eps)
    exp = torch.tensor([expected], dtype=torch.float64)
    exp_obj = float((_cost(Y) * exp).sum())
    assert abs(float(obj[0]) - exp_obj) < 1e-12
    torch.testing.assert_close(out, exp, atol=1e-12, rtol=0)
    assert _violation(Y, out, eps) < 1e-12
    # the objective is Σ c·y' at the returned vector
    assert abs(float((_cost(Y) * out).sum()) - float(obj[0])) < 1e-12


def test_spec_table_lp_agrees():
    for y, eps, expected in TABLE:
        Y = torch.tensor([y], dtype=torch.float64)
        out, obj = solve_mld_lp(Y, eps)
        exp_obj = float((_cost(Y) * torch.tensor([expected], dtype=torch.float64)).sum())
        assert abs(float(obj[0]) - exp_obj) < 1e-6


# ---------------------------------------------------------------------------------------------
# (b) against the LP backend (PuLP + CBC)


def _instances(K, eps, rng):
    rows = [_peaked(rng, K)[0], _flat(rng, K)[0]]
    return torch.stack(rows)


@pytest.mark.parametrize("K", [2, 3, 10, 100, 256])
@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 2.0])
def test_against_cbc_random(K, eps):
    rng = np.random.default_rng(1000 * K + int(10 * eps))
    Y = _instances(K, eps, rng)
    out, obj = solve_mld(Y, eps)
    out_lp, obj_lp = solve_mld_lp(Y, eps)
    assert torch.all((obj - obj_lp).abs() < 1e-6), (obj, obj_lp)
    assert _violation(Y, out, eps) < 1e-9
    assert torch.all(out.argmax(1) == Y.argmax(1))


def _edge_rows(K, rng):
    one_hot = torch.zeros(K, dtype=torch.float64)
    one_hot[int(rng.integers(K))] = 1.0
    tied = torch.full((K,), 1.0 / K, dtype=torch.float64)
    top2 = torch.from_numpy(rng.dirichlet(np.ones(K)))
    i, j = rng.choice(K, size=2, replace=False) if K > 1 else (0, 0)
    hi = top2.max() + 0.05
    top2[i] = hi
    top2[j] = hi
    top2 = top2 / top2.sum()
    last = torch.full((K,), 1e-9, dtype=torch.float64)
    last[-1] = 1.0 - (K - 1) * 1e-9
    rounded = torch.from_numpy(np.round(rng.dirichlet(np.ones(K)), 1))
    if rounded.sum() == 0:
        rounded[0] = 1.0
    rounded = rounded / rounded.sum()
    return torch.stack([one_hot, tied, top2, last, rounded])


@pytest.mark.parametrize("K", [2, 3, 10, 100, 256])
def test_against_cbc_edges(K):
    rng = np.random.default_rng(K)
    Y = _edge_rows(K, rng)
    for eps in (0.1, 1.0) if K > 10 else (0.1, 1.0, 2.0):
        out, obj = solve_mld(Y, eps)
        out_lp, obj_lp = solve_mld_lp(Y, eps)
        assert torch.all((obj - obj_lp).abs() < 1e-6), (K, eps, obj, obj_lp)
        assert _violation(Y, out, eps) < 1e-9


@pytest.mark.slow
def test_against_cbc_many():
    rng = np.random.default_rng(7)
    for K in (2, 3, 10, 100, 256):
        for eps in (0.1, 0.5, 1.0, 2.0):
            Y = torch.cat([_peaked(rng, K, 5), _flat(rng, K, 5), _edge_rows(K, rng)])
            out, obj = solve_mld(Y, eps)
            _, obj_lp = solve_mld_lp(Y, eps)
            assert torch.all((obj - obj_lp).abs() < 1e-6)
            assert _violation(Y, out, eps) < 1e-9


# ---------------------------------------------------------------------------------------------
# (c) properties of the exact solver


@st.composite
def _batch(draw):
    K = draw(st.integers(2, 40))
    B = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["peaked", "flat", "sparse", "rounded"]))
    rng = np.random.default_rng(seed)
    if kind == "peaked":
        Y = _peaked(rng, K, B)
    elif kind == "flat":
        Y = _flat(rng, K, B)
    elif kind == "sparse":
        Y = torch.from_numpy(rng.dirichlet(np.full(K, 0.05), size=B))
    else:
        Y = torch.from_numpy(np.round(rng.dirichlet(np.ones(K), size=B), 1)) + 0.0
        Y[Y.sum(1) == 0, 0] = 1.0
        Y = Y / Y.sum(1, keepdim=True)
    eps = draw(st.sampled_from([min_feasible_eps(K), 0.01, 0.1, 0.5, 1.0, 1.7, 2.0, 3.0]))
    return Y, eps


@settings(max_examples=60, deadline=None)
@given(_batch())
def test_properties(case):
    Y, eps = case
    out, obj = solve_mld(Y, eps)
    assert out.shape == Y.shape and out.dtype == Y.dtype
    assert torch.all(out.argmax(1) == Y.argmax(1))
    assert _violation(Y, out, eps) < 1e-9
    assert torch.allclose(obj, (_cost(Y) * out).sum(1), atol=1e-10, rtol=0)
    # never worse than leaving y alone when y is feasible (strict margin already there)
    # and never worse than the top cut at the left end of the feasible interval
    out2, obj2 = solve_mld(Y, eps)
    assert torch.equal(out, out2) and torch.equal(obj, obj2)  # deterministic
    for i in range(Y.shape[0]):  # batch result equals row-by-row result
        oi, vi = solve_mld(Y[i:i + 1], eps)
        assert torch.equal(oi[0], out[i])
        assert torch.equal(vi[0], obj[i])


def test_eps_tensor_and_dtype_roundtrip():
    rng = np.random.default_rng(3)
    Y = torch.cat([_peaked(rng, 10, 4), _flat(rng, 10, 4)])
    eps = torch.tensor([0.1, 0.5, 1.0, 2.0] * 2, dtype=torch.float64)
    out, obj = solve_mld(Y, eps)
    for i in range(8):
        oi, vi = solve_mld(Y[i:i + 1], float(eps[i]))
        assert torch.equal(oi[0], out[i]) and torch.equal(vi[0], obj[i])
    assert _violation(Y, out, eps) < 1e-9
    Y32 = Y.float()
    out32, obj32 = solve_mld(Y32, 1.0)
    assert out32.dtype == torch.float32 and obj32.dtype == torch.float64
    assert out32.device == Y32.device
    out64, _ = solve_mld(Y32.double(), 1.0)
    torch.testing.assert_close(out32, out64.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    Y = torch.cat([_peaked(rng, 256, 64), _flat(rng, 256, 64), _edge_rows(256, rng)])
    out, obj = solve_mld(Y, 1.0)
    out_c, obj_c = solve_mld(Y.cuda(), 1.0)
    assert out_c.device.type == "cuda"
    torch.testing.assert_close(obj_c.cpu(), obj, atol=1e-10, rtol=0)
    assert _violation(Y, out_c.cpu(), 1.0) < 1e-9


def test_special_inputs():
    # K = 2, one-hot with exact zeros, all tied, eps >= 2, the smallest feasible eps
    for K in (2, 3, 17):
        one_hot = torch.zeros(1, K, dtype=torch.float64)
        one_hot[0, K - 1] = 1.0
        tied = torch.full((1, K), 1.0 / K, dtype=torch.float64)
        for Y in (one_hot, tied):
            for eps in (min_feasible_eps(K), 0.3, 2.0, 5.0):
                out, obj = solve_mld(Y, eps)
                assert _violation(Y, out, eps) < 1e-9
                assert int(out.argmax()) == int(Y.argmax())
    # ties among the cheapest classes: the higher index is filled first (spec §6.6)
    Y = torch.tensor([[0.9, 0.05, 0.0, 0.0, 0.05]], dtype=torch.float64)
    out, _ = solve_mld(Y, 0.2)
    assert out[0, 3] > 0 and out[0, 2] == 0
    # eps >= 2: the whole simplex; spec §6.3 closed form (m and the k cheapest at a flat level)
    Y = torch.tensor([[0.4, 0.35, 0.25]], dtype=torch.float64)
    out3, obj3 = solve_mld(Y, 3.0)
    out2, obj2 = solve_mld(Y, 2.0)
    torch.testing.assert_close(out3, out2)


def test_infeasible_eps_raises():
    Y = torch.full((2, 10), 0.1, dtype=torch.float64)
    emin = min_feasible_eps(10)
    with pytest.raises(ValueError, match=r"eps=.*too small.*" + f"{emin:.6g}"):
        solve_mld(Y, emin * 0.5)
    with pytest.raises(ValueError, match="too small"):
        solve_mld(Y, torch.tensor([1.0, 1e-6]))
    with pytest.raises(ValueError, match="too small"):
        ModelGuardW(eps=1e-6).perturb(Y)
    with pytest.raises(ValueError, match="batch"):
        solve_mld(Y[0], 1.0)


# ---------------------------------------------------------------------------------------------
# the Defense wrapper and its config


def test_defense_wrapper():
    rng = np.random.default_rng(11)
    Y = torch.cat([_peaked(rng, 10, 3), _flat(rng, 10, 3)]).float()
    d = ModelGuardW()
    assert d.top1_preserve and not d.requires_xinfo
    out = d.perturb(Y)
    assert out.dtype == torch.float32 and out.shape == Y.shape
    assert torch.equal(out, d.simulate(Y))
    assert d.last_objective is not None and d.last_objective.shape == (6,)
    ref, obj = solve_mld(Y, 1.0)
    assert torch.equal(out, ref)
    lp = ModelGuardW(backend="lp").perturb(Y[:2])
    assert ((lp.double() - Y[:2].double()).abs().sum(1) <= 1.0 + 1e-6).all()
    assert "eps=1.0" in repr(d)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=0.0), r"defense\.eps=0\.0"),
        (dict(eps=-1.0), r"defense\.eps"),
        (dict(eps=float("nan")), r"defense\.eps"),
        (dict(eps="1"), r"defense\.eps"),
        (dict(budget="global"), r"defense\.budget='global'.*per_sample, batch"),
        (dict(backend="cbc"), r"defense\.backend='cbc'.*exact, lp"),
        (dict(budget="batch"), r"defense\.backend=lp"),
        (dict(margin=-1e-4), r"defense\.margin"),
        (dict(log_delta=0.0), r"defense\.log_delta"),
    ],
)
def test_invalid_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelGuardW(**kwargs)


def test_config_instantiates(compose_cfg):
    from hydra.utils import instantiate

    cfg = compose_cfg("defense=mld")
    d = instantiate(cfg.defense)
    assert isinstance(d, ModelGuardW)
    assert (d.eps, d.budget, d.backend, d.margin, d.log_delta) == (1.0, "per_sample", "exact", 1e-4, 1e-6)


# ---------------------------------------------------------------------------------------------
# (d) batch-wide budget (LP backend only)


def test_batch_budget_lp():
    rng = np.random.default_rng(13)
    Y = torch.cat([_peaked(rng, 5, 3), _flat(rng, 5, 3)])
    eps = 0.6
    d = ModelGuardW(eps=eps, budget="batch", backend="lp")
    out = d.perturb(Y)
    total = float((out - Y).abs().sum())
    assert total <= eps + 1e-6
    assert torch.all(out.argmax(1) == Y.argmax(1))
    assert torch.allclose(out.sum(1), torch.ones(6, dtype=torch.float64), atol=1e-7)
    # a shared budget can never beat per-sample budgets of eps each
    _, obj_ps = solve_mld(Y, eps)
    assert float(d.last_objective.sum()) >= float(obj_ps.sum()) - 1e-6
    # one row: the batch budget is the per-sample budget
    _, o1 = solve_mld_lp(Y[:1], eps, batch_constraint=True)
    _, o2 = solve_mld(Y[:1], eps)
    assert abs(float(o1[0]) - float(o2[0])) < 1e-6
    assert math.isfinite(total)


def test_numpy_and_torch_backends_agree():
    # solve_mld runs its search in numpy on CPU and in torch elsewhere; both must agree exactly
    from modelguard.defense.mld_solver import _solve

    rng = np.random.default_rng(17)
    for K in (2, 3, 10, 100, 256, 257):
        Y = torch.cat([_peaked(rng, K, 20), _flat(rng, K, 20), _edge_rows(K, rng)])
        for eps in (min_feasible_eps(K), 0.1, 1.0, 2.0):
            e = torch.full((Y.shape[0],), eps, dtype=torch.float64)
            out_np, obj_np = _solve(Y, e, MU, DELTA, numpy=True)
            out_t, obj_t = _solve(Y, e, MU, DELTA, numpy=False)
            assert torch.equal(out_np, out_t) and torch.equal(obj_np, obj_t), (K, eps)
            assert _violation(Y, out_t, eps) < 1e-9


# ---------------------------------------------------------------------------------------------
# (e) the rows the pipeline really feeds: float32 softmax rows of a trained LeNet (they sum to
# 1 only within ~2e-7), half precision as autocast gives it, zeros, one-hots, ties, near-ties.
# The reference is an independent LP solver (HiGHS, tests/defense/lp_reference.py) on the row
# renormalised in float64; CBC (the LP backend) must agree with the exact backend on them too.

from modelguard.defense.base import release_dtype, sum_tolerance  # noqa: E402
from tests.defense.lp_reference import highs_objective  # noqa: E402
from tests.realistic_rows import pipeline_families, softmax_rows  # noqa: E402


def _assert_released_ok(raw: torch.Tensor, out: torch.Tensor, eps: float):
    """Invariants in the returned dtype: float32 for half inputs, no NaN, on the simplex and
    inside the L1 ball within that dtype's rounding, the top class strictly first by the margin
    (less rounding)."""
    assert out.dtype == release_dtype(raw.dtype) and out.shape == raw.shape
    assert bool(torch.isfinite(out).all())
    u = torch.finfo(out.dtype).eps  # one rounding of each entry: ≤ u/2 relative, ≤ u/2 summed
    o = out.to(torch.float64)
    r = raw.to(torch.float64)
    raw_off = (r.sum(1) - 1.0).abs()  # how far the input row itself is off the simplex
    assert float((o.sum(1) - 1.0).abs().max()) <= u + 1e-12
    assert float(o.min()) >= 0.0
    l1 = (o - r).abs().sum(1)
    assert bool((l1 <= eps + raw_off + u + 1e-12).all()), float((l1 - eps - raw_off).max())
    m = raw.argmax(1, keepdim=True)  # first max of the row as given
    top = o.gather(1, m)
    gap = (top - o).scatter(1, m, float("inf")).amin(1)
    assert bool((gap >= MU - 2 * u).all()), float(gap.min())
    assert bool((out.argmax(1) == m.squeeze(1)).all())  # strictly first in the returned dtype


def _spread(rows: torch.Tensor, count: int) -> torch.Tensor:
    idx = torch.linspace(0, rows.shape[0] - 1, min(count, rows.shape[0])).round().long().unique()
    return rows[idx]


@pytest.mark.parametrize("K,per_family", [(10, 40), (100, 16), (256, 10)])
@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_pipeline_rows_match_independent_lp(K, per_family, eps):
    """The exact backend on every family of pipeline rows: objective equal to HiGHS's optimum
    (1e-9 in float64; 1e-5 for the returned, rounded vector) and every invariant held."""
    for name, rows in pipeline_families(K).items():
        out_all, _ = solve_mld(rows, eps)
        _assert_released_ok(rows, out_all, eps)
        sub = _spread(rows, per_family)
        out, obj = solve_mld(sub, eps)
        ref = torch.tensor([highs_objective(r, eps) for r in sub], dtype=torch.float64)
        y = sub.to(torch.float64)
        cost = torch.log(y / y.sum(1, keepdim=True) + DELTA)
        gap = obj - ref
        assert float(gap.abs().max()) <= 1e-9, (name, float(gap.abs().max()))
        released_gap = (cost * out.to(torch.float64)).sum(1) - ref
        assert float(released_gap.max()) <= 1e-5, (name, float(released_gap.max()))


def test_pipeline_rows_lp_backend_agrees():
    """Both backends pose the same LP on the same float32/half rows: objectives within CBC's
    tolerance, both vectors valid in the returned dtype."""
    fams = pipeline_families(10)
    rows = torch.cat([_spread(fams["lenet_test"], 4), _spread(fams["lenet_pool"], 4)])
    for batch in (rows, _spread(fams["half_bfloat16"], 4), fams["edge_float32"]):
        out, obj = solve_mld(batch, 1.0)
        out_lp, obj_lp = solve_mld_lp(batch, 1.0)
        assert out_lp.dtype == out.dtype == release_dtype(batch.dtype)
        assert float((obj - obj_lp).abs().max()) < 1e-6
        _assert_released_ok(batch, out, 1.0)
        _assert_released_ok(batch, out_lp, 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rows_keep_top1(dtype):
    """Half-precision rows: released as float32 so the 1e-4 margin survives (in float16 the
    spacing near 0.5 is 5e-4, in bfloat16 4e-3: the top class would tie or fall behind)."""
    rows32, logits = softmax_rows(256, n=128, sigma=1.0)
    rows = torch.softmax(logits.to(dtype), 1)
    out = ModelGuardW(eps=1.0).perturb(rows)
    assert out.dtype == torch.float32
    _assert_released_ok(rows, out, 1.0)


@st.composite
def _pipeline_batch(draw):
    K = draw(st.integers(2, 300))
    B = draw(st.integers(1, 4))
    sigma = draw(st.sampled_from([0.3, 1.0, 3.0, 8.0, 20.0]))
    dtype = draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, generator=g, dtype=torch.float64) * sigma
    rows = torch.softmax(logits.to(dtype), 1)  # computed natively in the dtype, as a pipeline would
    eps = draw(st.sampled_from([0.1, 0.5, 1.0, 2.0]))
    return rows, eps


@settings(max_examples=40, deadline=None)
@given(_pipeline_batch())
def test_pipeline_properties_against_highs(case):
    rows, eps = case
    out, obj = solve_mld(rows, eps)
    _assert_released_ok(rows, out, eps)
    ref = torch.tensor([highs_objective(r, eps) for r in rows], dtype=torch.float64)
    assert float((obj - ref).abs().max()) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("K", [10, 100, 256])
def test_pipeline_rows_match_independent_lp_all_rows(K):
    """Every row of every family (not a spread), eps 0.5/1/2; minutes at K = 256."""
    for name, rows in pipeline_families(K).items():
        rows = rows[:256]
        for eps in (0.5, 1.0, 2.0):
            out, obj = solve_mld(rows, eps)
            _assert_released_ok(rows, out, eps)
            ref = torch.tensor([highs_objective(r, eps) for r in rows], dtype=torch.float64)
            assert float((obj - ref).abs().max()) <= 1e-9, (name, eps)
