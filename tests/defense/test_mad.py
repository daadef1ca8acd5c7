"""MAD (spec §4): the batched oracle against literal per-row loops, and the Jacobian-free
shortcut against the full Jacobian objective computed with torch.autograd."""
from __future__ import annotations

import itertools

import pytest
import torch

from modelguard.defense.base import release_dtype
from modelguard.defense.mad import BUDGET, BUMP, MAD, SMOOTH, TIE_TOL, line_search, mad_objective
from tests.realistic_rows import family_names, pipeline_params


def _posteriors(rows: int, k: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(rows, k, generator=g, dtype=torch.float64), dim=1)


# ----------------------------------------------------------------------------------------
# literal references, one row at a time, written straight from the spec's prose


def _objective_one(cand: torch.Tensor, y: torch.Tensor, p: torch.Tensor | None, objective: str) -> float:
    return float(mad_objective(cand[None], y, p, objective)[0])


def _ref_exhaustive(y: torch.Tensor, p: torch.Tensor | None, objective: str, obj_fn=None) -> torch.Tensor:
    k = y.numel()
    m = int(y.argmax())
    best, best_val = None, -1.0
    for bits in itertools.product((0.0, 1.0), repeat=k):  # first coordinate most significant
        if bits[m] != 1.0:
            continue
        b = torch.tensor(bits, dtype=torch.float64)
        b[m] += BUMP
        cand = b / b.sum()
        val = obj_fn(cand) if obj_fn else _objective_one(cand, y, p, objective)
        if val > best_val + TIE_TOL:
            best, best_val = cand, val
    return best


def _ref_greedy(y: torch.Tensor, p: torch.Tensor | None, objective: str, obj_fn=None) -> torch.Tensor:
    k = y.numel()
    m = int(y.argmax())
    ys = (y + SMOOTH) / (y + SMOOTH).sum()
    fixed = [m]
    best, best_val, used = None, -1.0, 0
    while used < BUDGET and len(fixed) < k:
        round_best, round_val, n_eval = None, None, 0
        for j in range(k):
            if j in fixed:
                continue
            b = torch.zeros(k, dtype=torch.float64)
            b[fixed + [j]] = 1.0
            b[m] += BUMP
            cand = b / b.sum()
            val = obj_fn(cand, ys) if obj_fn else _objective_one(cand, ys, p, objective)
            n_eval += 1
            if round_val is None or val > round_val + TIE_TOL:
                round_best, round_val = (j, cand), val
        if round_val > best_val + TIE_TOL:
            best, best_val = round_best[1], round_val
        fixed.append(round_best[0])
        used += n_eval
    if best is None:
        best = torch.zeros(k, dtype=torch.float64)
        best[m] = 1.0
    return best


def _ref_mad(y, p, eps, norm, objective="angular", obj_fn=None):
    target = _ref_exhaustive if y.numel() <= 10 else _ref_greedy
    ystar = target(y, p, objective, obj_fn)
    return line_search(y[None], ystar[None], eps, norm)[0]


# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 6, 10])
@pytest.mark.parametrize("with_p", [True, False])
@pytest.mark.parametrize("objective", ["angular", "surrogate"])
def test_exhaustive_matches_literal_loop(k, with_p, objective):
    rows = 3 if k == 10 else 8
    y = _posteriors(rows, k, seed=k)
    p = _posteriors(rows, k, seed=100 + k, scale=0.5) if with_p else None
    out = MAD(eps=0.7, norm="l1", objective=objective).perturb(y, p)
    for i in range(rows):
        ref = _ref_mad(y[i], None if p is None else p[i], 0.7, "l1", objective)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("k,rows", [(11, 4), (20, 4), (43, 1), (256, 2)])
@pytest.mark.parametrize("with_p", [True, False])
def test_greedy_matches_literal_loop(k, rows, with_p):
    y = _posteriors(rows, k, seed=k)
    y[0, : k // 3] = 0.0  # exact zeros (smoothed only inside the objective)
    y = y / y.sum(1, keepdim=True)
    p = _posteriors(rows, k, seed=7 * k, scale=0.3) if with_p else None
    outs = {norm: MAD(eps=0.8, norm=norm).perturb(y, p) for norm in ("l1", "l2")}
    for i in range(rows):
        ystar = _ref_greedy(y[i], None if p is None else p[i], "angular")
        for norm, out in outs.items():
            ref = line_search(y[i][None], ystar[None], 0.8, norm)[0]
            torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-12)


def test_greedy_surrogate_matches_literal_loop():
    y = _posteriors(4, 20, seed=3)
    out = MAD(eps=0.5, objective="surrogate").perturb(y, None)
    for i in range(4):
        torch.testing.assert_close(out[i], _ref_mad(y[i], None, 0.5, "l1", "surrogate"), rtol=0, atol=1e-12)


def test_greedy_round_count_follows_budget():
    # K = 256: 255 + 254 + 253 + 252 = 1014 < 1024, so a fifth round runs and no sixth:
    # the target has at most 1 + 5 classes. eps = 2 makes alpha = 1, so y' = y*.
    y = _posteriors(3, 256, seed=1, scale=1.0)
    ystar_support = (MAD(eps=2.0).perturb(y.double(), None) > 0).sum(1)
    assert int(ystar_support.max()) <= 6


def test_batch_size_does_not_change_answers():
    y = _posteriors(9, 8, seed=5)
    p = _posteriors(9, 8, seed=6)
    mad = MAD()
    full = mad.perturb(y, p)
    for i in range(9):
        torch.testing.assert_close(mad.perturb(y[i : i + 1], p[i : i + 1])[0], full[i], rtol=0, atol=0)


@pytest.mark.parametrize("k", [4, 10, 20, 256])
@pytest.mark.parametrize("norm,eps", [("l1", 1.0), ("l1", 0.1), ("l2", 0.3)])
def test_ball_and_label(k, norm, eps):
    y = _posteriors(16, k, seed=k, scale=4.0).to(torch.float32)
    p = _posteriors(16, k, seed=k + 1).to(torch.float32)
    out = MAD(eps=eps, norm=norm).perturb(y, p)
    assert out.dtype == torch.float32
    d = (out.double() - y.double())
    dist = d.abs().sum(1) if norm == "l1" else d.norm(dim=1)
    assert (dist <= eps + 1e-6).all()
    assert torch.equal(out.argmax(1), y.argmax(1))
    torch.testing.assert_close(out.double().sum(1), torch.ones(16, dtype=torch.float64), atol=1e-6, rtol=0)


def test_undefined_objective_falls_back_to_top_class():
    y = _posteriors(3, 6, seed=0)
    out = MAD(eps=2.0).perturb(y, y.clone())  # p == y: every angle is 0/0
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.nn.functional.one_hot(y.argmax(1), 6).double())


def test_other_oracles():
    y = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    out = MAD(eps=2.0, oracle="argmin").perturb(y)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), atol=1e-6, rtol=0)
    # extreme with G = I maximises the angle to y: the one-hot of the least likely class
    out = MAD(eps=2.0, oracle="extreme").perturb(y)
    assert int(out.argmax()) == 2
    assert not MAD(oracle="extreme").top1_preserve and MAD().top1_preserve


@pytest.mark.parametrize("k", [7, 30])
@pytest.mark.parametrize("with_p", [True, False])
@pytest.mark.parametrize("objective", ["angular", "surrogate"])
def test_extreme_matches_literal_loop(k, with_p, objective):
    y = _posteriors(5, k, seed=k)
    p = _posteriors(5, k, seed=k + 3, scale=0.5) if with_p else None
    out = MAD(eps=2.0, oracle="extreme", objective=objective).perturb(y, p)
    for i in range(5):
        best, best_val = None, -1.0
        for j in range(k):
            e = torch.zeros(k, dtype=torch.float64)
            e[j] = 1.0
            val = _objective_one(e, y[i], None if p is None else p[i], objective)
            if val > best_val + TIE_TOL:
                best, best_val = e, val
        torch.testing.assert_close(out[i], line_search(y[i][None], best[None], 2.0, "l1")[0], rtol=0, atol=1e-13)


def test_hand_computed_k2():
    # K = 2, y = (0.7, 0.3), G = I: the candidates are e_0 (angle 0) and (1+1e-5, 1)/(2+1e-5)
    # (angle ≈ π/4). y sits at atan(3/7) ≈ 0.405 rad, farther from e_0 (0.405) than from the
    # diagonal (0.380), so y* = e_0; its L1 distance from y is 0.6 < eps = 1, so y' = e_0.
    y = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(MAD(eps=1.0).perturb(y), expected, rtol=0, atol=1e-15)
    # with eps = 0.1 the line search stops a sixth of the way: alpha = 0.1/(0.6 + 1e-7)
    alpha = 0.1 / (0.6 + 1e-7)
    torch.testing.assert_close(MAD(eps=0.1).perturb(y), (1 - alpha) * y + alpha * expected, rtol=0, atol=1e-15)
    # with a proxy posterior p = (0.5, 0.5) the direction is p − a: p − y = (−0.2, 0.2) and
    # p − e_0 = (−0.5, 0.5) point the same way (objective 0), while p − (1+1e-5, 1)/(2+1e-5)
    # ≈ (−2.5e-6, 2.5e-6) also does: every candidate scores 0, so the first (e_0) wins.
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(MAD(eps=1.0).perturb(y, p), expected, rtol=0, atol=1e-15)


def test_validation():
    with pytest.raises(ValueError, match=r"defense.eps=-1.*set defense.eps=1.0"):
        MAD(eps=-1)
    with pytest.raises(ValueError, match="defense.norm='kl'.*'l1', 'l2'"):
        MAD(norm="kl")
    with pytest.raises(ValueError, match="defense.oracle='lp_argmax'"):
        MAD(oracle="lp_argmax")
    with pytest.raises(ValueError, match="defense.objective='x'"):
        MAD(objective="x")
    with pytest.raises(ValueError, match="proxy=model"):
        MAD().xinfo(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="xinfo"):
        MAD().perturb(torch.full((2, 3), 1 / 3), torch.full((2, 4), 1 / 4))


# ----------------------------------------------------------------------------------------
# the Jacobian-free shortcut (spec §4.2) against the full Jacobian


class _TinyNet(torch.nn.Module):
    """Conv features + a linear head: the head's weight is parameter index -2."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.fc = torch.nn.Linear(3 * 4 * 4, 7)
        self.head = torch.nn.Linear(7, k)

    def forward(self, x):
        h = torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1)))
        return self.head(h)


def _jacobian(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """G [K, D]: row k is ∂(−log softmax_k)/∂W for the parameter at index −2, flattened."""
    weight = list(model.parameters())[-2]
    logp = torch.log_softmax(model(x[None]), dim=1)[0]
    rows = []
    for k in range(logp.numel()):
        (grad,) = torch.autograd.grad(-logp[k], weight, retain_graph=True)
        rows.append(grad.flatten())
    return torch.stack(rows)


def _full_objective(G: torch.Tensor, y: torch.Tensor):
    gy = G.T @ y
    gy = gy / gy.norm()

    def obj(cand, ref=None):
        ref_dir = gy if ref is None else (G.T @ ref) / (G.T @ ref).norm()
        gc = G.T @ cand
        return float(((gc / gc.norm() - ref_dir) ** 2).sum())

    return obj


@pytest.mark.parametrize("k", [6, 12])
def test_jacobian_shortcut_equals_full_objective(k):
    torch.manual_seed(k)
    model = _TinyNet(k).double()
    mad = MAD(eps=0.9, proxy=model)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    y = _posteriors(5, k, seed=11 * k)
    p = mad.xinfo(x)
    torch.testing.assert_close(p, torch.softmax(model(x), 1).detach(), rtol=0, atol=1e-15)
    out = mad.perturb(y, p)
    g = torch.Generator().manual_seed(k)
    for i in range(5):
        G = _jacobian(model, x[i])
        full = _full_objective(G, y[i])
        # objective values agree on random simplex points and on vertex candidates
        cands = torch.softmax(2 * torch.randn(40, k, generator=g, dtype=torch.float64), 1)
        cands = torch.cat([cands, torch.eye(k, dtype=torch.float64)])
        short = mad_objective(cands, y[i], p[i])
        for c, s in zip(cands, short):
            assert abs(full(c) - float(s)) < 1e-10
        # and the full-Jacobian oracle chooses the same released vector
        if k <= 10:
            ref = line_search(y[i][None], _ref_exhaustive(y[i], None, "angular", full)[None], 0.9, "l1")[0]
        else:
            ref = line_search(
                y[i][None], _ref_greedy(y[i], None, "angular", lambda c, ys: full(c, ys))[None], 0.9, "l1"
            )[0]
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-10)


def test_proxy_is_a_constructor_argument_and_to():
    model = _TinyNet(3)
    mad = MAD(proxy=model)
    assert mad.proxy is model and not hasattr(mad, "set_proxy")
    assert mad.to("cpu") is mad
    with pytest.raises(TypeError):
        MAD(proxy="not a model")


# ----------------------------------------------------------------------------------------
# the rows a victim really hands over (tests/realistic_rows.py), a few per family: the
# batched oracle and the line search against the literal loops, and against the full
# Jacobian; outputs in release_dtype, compared to the float64 references within its rounding


def _some_rows(rows: torch.Tensor, n: int = 4) -> torch.Tensor:
    """The first and last rows of a family (edge families are small: all of them)."""
    if rows.shape[0] <= 2 * n:
        return rows
    return torch.cat([rows[: n // 2 + 1], rows[-(n // 2):]])


@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
@pytest.mark.parametrize("with_p", [True, False])
def test_pipeline_rows_match_literal_loop(K, family, with_p, pipeline_rows):
    probs = _some_rows(pipeline_rows(K, family), 3 if K > 10 else 4)
    rows = probs.shape[0]
    p = _posteriors(rows, K, seed=K, scale=0.5) if with_p else None
    y = probs.double()
    out = MAD(eps=0.7, norm="l1").perturb(probs, p)
    assert out.dtype == release_dtype(probs.dtype)
    ulp = torch.finfo(out.dtype).eps
    for i in range(rows):
        ref = _ref_mad(y[i], None if p is None else p[i], 0.7, "l1")
        torch.testing.assert_close(out[i].double(), ref, rtol=2 * ulp, atol=1e-13)


@pytest.mark.parametrize("family", family_names(10))
def test_pipeline_rows_jacobian_shortcut_equals_full_objective(family, pipeline_rows):
    torch.manual_seed(10)
    model = _TinyNet(10).double()
    mad = MAD(eps=0.9, proxy=model)
    probs = _some_rows(pipeline_rows(10, family), 3)
    rows = probs.shape[0]
    x = torch.randn(rows, 1, 6, 6, dtype=torch.float64)
    out = mad.perturb(probs, mad.xinfo(x))
    ulp = torch.finfo(out.dtype).eps
    y = probs.double()
    for i in range(rows):
        full = _full_objective(_jacobian(model, x[i]), y[i])
        ref = line_search(y[i][None], _ref_exhaustive(y[i], None, "angular", full)[None], 0.9, "l1")[0]
        torch.testing.assert_close(out[i].double(), ref, rtol=2 * ulp, atol=1e-10)
