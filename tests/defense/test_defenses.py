"""Contract tests for every defense except ModelGuard-W (spec §1-§5).

Property tests draw posteriors of several shapes (random, peaked, flat, one-hot with exact
zeros, tied top classes, tiny values) at K = 2 ... 256 and check: finite outputs in the
input's dtype; the simplex (documented exceptions: rounding and top-k); the label where
``top1_preserve``; the eps ball (MAD); determinism and ``simulate``. Then exact outputs on
hand-computed cases and the constructor errors."""
from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelguard.defense.am import AdaptiveMisinformation
from modelguard.defense.base import Defense, release_dtype
from modelguard.defense.mad import MAD
from modelguard.defense.none import NoDefense
from modelguard.utils.seed import make_generator
from modelguard.defense.random_noise import RandomNoise, project_l1_ball
from modelguard.defense.reverse_sigmoid import ReverseSigmoid
from modelguard.defense.rounding import Rounding
from modelguard.defense.top1 import Top1
from modelguard.defense.topk import TopK
from tests.realistic_rows import family_names, pipeline_params

KINDS = ("random", "peaked", "flat", "onehot", "ties", "tiny")


def make_probs(kind: str, rows: int, k: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, k, generator=g, dtype=torch.float64)
    if kind == "random":
        y = torch.softmax(3 * z, 1)
    elif kind == "peaked":
        y = torch.softmax(40 * z, 1)
    elif kind == "flat":
        y = torch.full((rows, k), 1.0 / k, dtype=torch.float64)
    elif kind == "onehot":
        y = torch.nn.functional.one_hot(torch.randint(k, (rows,), generator=g), k).to(torch.float64)
    elif kind == "ties":  # two (or more) classes share the top value, the rest is spread
        y = torch.softmax(z, 1)
        top = y.max(1, keepdim=True).values
        y[:, : max(1, k // 2) : 1] = torch.where(torch.arange(max(1, k // 2)) % 2 == 0, top, y[:, : max(1, k // 2)])
        y = y / y.sum(1, keepdim=True)
    else:  # tiny: underflowing tails next to a dominant class
        y = torch.softmax(400 * z, 1)
    return y.to(dtype)


probs_args = st.tuples(
    st.sampled_from(KINDS),
    st.integers(1, 5),
    st.sampled_from([2, 3, 7, 10, 11, 20, 256]),
    st.integers(0, 2**31 - 1),
    st.sampled_from([torch.float32, torch.float64]),
)


def _xinfo(probs: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.softmax(torch.randn(probs.shape, generator=g, dtype=torch.float64), 1).to(probs.dtype)


# (factory, on the simplex?, deterministic?)
DEFENSES = {
    "none": (NoDefense, True, True),
    "top1": (Top1, True, True),
    "topk2": (lambda: TopK(2), False, True),
    "topk3_hot": (lambda: TopK(3, one_hot=True), False, True),
    "rounding": (Rounding, False, True),
    "rounding3": (lambda: Rounding(3), False, True),
    "reverse_sigmoid": (ReverseSigmoid, True, True),
    "reverse_sigmoid_c100": (lambda: ReverseSigmoid(0.02, 0.2), True, True),
    "reverse_sigmoid_monotone": (lambda: ReverseSigmoid(0.5, 1.5), True, True),
    "random_noise_l1": (RandomNoise, True, False),
    "random_noise_l2_gauss": (lambda: RandomNoise(0.5, "l2", "gaussian", seed=3), True, False),
    "mad": (MAD, True, True),
    "mad_l2": (lambda: MAD(0.3, "l2"), True, True),
    "mad_extreme": (lambda: MAD(0.5, oracle="extreme"), True, True),
    "am": (AdaptiveMisinformation, True, True),
    "am_fixed": (lambda: AdaptiveMisinformation(0.3, adaptive=False), True, True),
}


def _call(defense: Defense, probs: torch.Tensor, seed: int, simulate: bool = False) -> torch.Tensor:
    info = _xinfo(probs, seed) if defense.requires_xinfo else None
    fn = defense.simulate if simulate else defense.perturb
    return fn(probs, info)


@pytest.mark.parametrize("name", sorted(DEFENSES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=probs_args)
def test_contract(name, args):
    kind, rows, k, seed, dtype = args
    factory, on_simplex, deterministic = DEFENSES[name]
    probs = make_probs(kind, rows, k, seed, dtype)
    defense = factory()
    out = _call(defense, probs, seed)
    assert out.shape == probs.shape and out.dtype == probs.dtype and out.device == probs.device
    assert torch.isfinite(out).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    if on_simplex:
        assert (out >= 0).all()
        torch.testing.assert_close(out.double().sum(1), torch.ones(rows, dtype=torch.float64), rtol=0, atol=tol)
    if defense.top1_preserve:
        # float32 rounding can merge classes whose clean values are one ulp apart; the
        # promise is exact in float64 and for every row with a visible margin in float32
        top2 = probs.double().topk(min(2, k), dim=1).values
        gap = (top2[:, 0] - top2[:, -1]) if k > 1 else torch.ones(rows, dtype=torch.float64)
        check = (gap == 0) | (gap > 1e-5) if dtype == torch.float32 else torch.ones(rows, dtype=torch.bool)
        assert torch.equal(out.argmax(1)[check], probs.argmax(1)[check])
    if isinstance(defense, MAD):
        d = out.double() - probs.double()
        dist = d.abs().sum(1) if defense.norm == "l1" else d.norm(dim=1)
        assert (dist <= defense.eps + tol).all()
    if deterministic:
        assert torch.equal(_call(defense, probs, seed, simulate=True), out)
        assert torch.equal(_call(factory(), probs, seed), out)


def test_flags():
    assert NoDefense().top1_preserve and Top1().top1_preserve and TopK(3).top1_preserve
    assert not TopK(3, one_hot=True).top1_preserve and TopK(1, one_hot=True).top1_preserve
    assert not Rounding().top1_preserve
    assert not ReverseSigmoid().top1_preserve  # grid: γ = 0.2
    assert ReverseSigmoid(0.5, 1.5).top1_preserve and ReverseSigmoid(0.0, 0.2).top1_preserve
    assert ReverseSigmoid(0.3, 0.0).top1_preserve
    assert not ReverseSigmoid(0.5, 2.0).top1_preserve  # β·γ = 1: g'(1/2) = 0, not strictly increasing
    assert not RandomNoise().top1_preserve and not AdaptiveMisinformation().top1_preserve
    assert MAD().top1_preserve and not MAD(oracle="argmin").top1_preserve
    assert MAD.requires_xinfo and AdaptiveMisinformation.requires_xinfo and not RandomNoise.requires_xinfo


# ---------------------------------------------------------------------------- random noise


def test_random_noise_seeding_and_fresh_simulation():
    probs = make_probs("random", 6, 10, 0, torch.float64)
    a, b = RandomNoise(seed=5), RandomNoise(seed=5)
    first = a.perturb(probs)
    assert torch.equal(first, b.perturb(probs))  # same seed, same answers
    assert not torch.equal(a.perturb(probs), first)  # a stream, not a replay
    assert not torch.equal(RandomNoise(seed=6).perturb(probs), first)
    sim1, sim2 = a.simulate(probs), a.simulate(probs)
    assert not torch.equal(sim1, first) and not torch.equal(sim1, sim2)  # fresh noise
    assert torch.equal(RandomNoise(seed=5).simulate(probs), sim1)  # reproducible too
    # simulate leaves the API's stream alone
    c = RandomNoise(seed=5)
    c.simulate(probs)
    assert torch.equal(c.perturb(probs), first)


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("strategy", ["uniform", "gaussian"])
def test_random_noise_follows_the_documented_recipe(norm, strategy):
    k, eps, seed = 7, 0.8, 11
    probs = make_probs("random", 4, k, 1, torch.float64)
    out = RandomNoise(eps, norm, strategy, seed).perturb(probs)
    g = make_generator(seed, "random-noise")  # the documented stream
    if strategy == "uniform":
        delta = torch.rand(4, k, generator=g, dtype=torch.float64) * (2 * eps / k ** (1.0 if norm == "l1" else 0.5))
    else:
        delta = torch.randn(4, k, generator=g, dtype=torch.float64)
    if norm == "l1":
        delta = project_l1_ball(delta, eps)
        assert (delta.abs().sum(1) <= eps + 1e-12).all()
    else:
        delta = delta * eps / delta.norm(dim=1, keepdim=True).clamp_min(eps)
    z = torch.log(probs / (1 - probs)) + delta
    expected = torch.sigmoid(z) / torch.sigmoid(z).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


def test_random_noise_keeps_exact_zeros_and_ones():
    probs = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    out = RandomNoise(seed=1).perturb(probs)
    assert torch.equal(out[0], probs[0])
    assert out[1, 0] == 0.0


def test_project_l1_ball_hand_cases_and_optimality():
    v = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-3.0, 1.0, 0.0], [0.2, -0.3, 0.1]], dtype=torch.float64)
    out = project_l1_ball(v, torch.tensor(2.0, dtype=torch.float64).item())
    expected = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-2.0, 0.0, 0.0], [0.2, -0.3, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(project_l1_ball(torch.tensor([[1.0, 1.0]]), 1.0), torch.tensor([[0.5, 0.5]]))
    # no feasible point is closer than the projection
    g = torch.Generator().manual_seed(0)
    v = 3 * torch.randn(20, 9, generator=g, dtype=torch.float64)
    x = project_l1_ball(v, 1.5)
    torch.testing.assert_close(x.abs().sum(1), torch.full((20,), 1.5, dtype=torch.float64), rtol=0, atol=1e-12)
    z = project_l1_ball(torch.randn(20, 200, 9, generator=g, dtype=torch.float64).view(-1, 9), 1.5).view(20, 200, 9)
    assert ((v[:, None] - z).norm(dim=-1) >= (v - x).norm(dim=1, keepdim=True) - 1e-12).all()


# ---------------------------------------------------------------------------- exact cases


def _t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def test_none_top1_topk_exact():
    y = _t([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    out = NoDefense().perturb(y)
    assert torch.equal(out, y) and out.data_ptr() != y.data_ptr()
    assert torch.equal(Top1().perturb(y), _t([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(TopK(2).perturb(y), _t([[0.0, 0.5, 0.3], [0.4, 0.4, 0.0]]))
    assert torch.equal(TopK(1).perturb(y), _t([[0.0, 0.5, 0.0], [0.4, 0.0, 0.0]]))  # tie: lowest index
    assert torch.equal(TopK(2, one_hot=True).perturb(y), _t([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    assert torch.equal(TopK(1, one_hot=True).perturb(y), Top1().perturb(y))
    assert torch.equal(TopK(5).perturb(y), y)  # k ≥ K keeps everything


def test_rounding_exact():
    y = _t([[0.25, 0.33, 0.42], [0.41, 0.44, 0.15]])
    out = Rounding(1).perturb(y)
    # 0.25 → 0.2 (2.5 rounds half to even); no renormalisation, so row 0 sums to 0.9
    assert torch.equal(out, _t([[0.2, 0.3, 0.4], [0.4, 0.4, 0.2]]))
    assert out[0].sum() < 1.0
    assert int(out[1].argmax()) == 0 != int(y[1].argmax())  # the label flip of spec §12.8
    # in float32, 0.35 is 0.3499999940... and 10·0.35 rounds to 3.5 → 0.4, as numpy does
    assert Rounding(1).perturb(_t([[0.35, 0.65]], torch.float32)).tolist() == [[pytest.approx(0.4), pytest.approx(0.6)]]
    # the same arithmetic as numpy.round in the input's dtype
    np = pytest.importorskip("numpy")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        a = torch.rand(2000, 1, generator=g, dtype=torch.float64).to(dtype)
        x = torch.cat([a, 1 - a], 1)  # 2000 valid rows (a defense refuses anything else)
        for d in (1, 2, 4):
            assert (Rounding(d).perturb(x).numpy() == np.round(x.numpy(), d)).all()
    flat = torch.full((1, 256), 1 / 256)
    assert torch.equal(Rounding(1).perturb(flat), torch.zeros(1, 256))
    torch.testing.assert_close(Rounding(3).perturb(_t([[0.12345, 0.87655]])), _t([[0.123, 0.877]]))


def test_reverse_sigmoid_exact():
    # one-hot, beta 0.21, gamma 0.2: s(1) = 1, s(0) = 0, so y~ = (1 − 0.105, 0.105, 0.105)
    out = ReverseSigmoid().perturb(_t([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, _t([[0.895, 0.105, 0.105]]) / 1.105, rtol=0, atol=1e-15)
    # gamma 1: s(p) = p, y~ = p − beta(p − 1/2) = 0.5p + 0.25 for beta 0.5
    out = ReverseSigmoid(0.5, 1.0).perturb(_t([[0.2, 0.3, 0.5]]))
    torch.testing.assert_close(out, _t([[0.35, 0.4, 0.5]]) / 1.25, rtol=0, atol=1e-15)
    # the uniform vector is a fixed point; gamma 0 is the identity
    u = torch.full((2, 5), 0.2, dtype=torch.float64)
    torch.testing.assert_close(ReverseSigmoid().perturb(u), u, rtol=0, atol=1e-15)
    y = _t([[0.1, 0.6, 0.3]])
    torch.testing.assert_close(ReverseSigmoid(0.4, 0.0).perturb(y), y, rtol=0, atol=1e-15)
    # the grid setting flips labels: a class at 0.001 ends above 249 classes at 0.004012
    y = torch.full((1, 250), 0.999 / 249, dtype=torch.float64)
    y[0, 0] = 0.001
    assert int(y.argmax()) == 1 and int(ReverseSigmoid().perturb(y).argmax()) == 0
    # very large gamma: both powers underflow, the logit fallback keeps it finite
    out = ReverseSigmoid(0.5, 1e4).perturb(_t([[0.3, 0.7]]))
    torch.testing.assert_close(out, _t([[0.55, 0.45]]), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "build,pattern",
    [
        (lambda: TopK(0), r"defense.k=0 is invalid: .*set defense.k=1"),
        (lambda: TopK(1.5), r"defense.k=1.5"),
        (lambda: TopK(2, one_hot="no"), r"defense.one_hot='no'"),
        (lambda: Rounding(-1), r"defense.decimals=-1 is invalid: .*≥ 0.*set defense.decimals=1"),
        (lambda: Rounding(1.0), r"defense.decimals=1.0"),
        (lambda: ReverseSigmoid(beta=-1), r"defense.beta=-1 is invalid: beta must be .*in \[0, 1\) .*; set defense.beta=0.21"),
        (lambda: ReverseSigmoid(gamma=float("inf")), r"defense.gamma=inf .*set defense.gamma=0.2"),
        (lambda: RandomNoise(eps=0), r"defense.eps=0 is invalid: .*> 0"),
        (lambda: RandomNoise(norm="linf"), r"defense.norm='linf' .*'l1', 'l2'"),
        (lambda: RandomNoise(strategy="laplace"), r"defense.strategy='laplace' .*set defense.strategy=uniform"),
        (lambda: RandomNoise(seed=None), r"defense.seed=None"),
    ],
)
def test_constructor_errors(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


@pytest.mark.parametrize("defense", [NoDefense(), Top1(), TopK(2), Rounding(), ReverseSigmoid(), RandomNoise(), MAD()])
def test_rejects_unbatched_input(defense):
    with pytest.raises(ValueError, match=r"probs\[None\]"):
        defense.perturb(torch.tensor([0.2, 0.8]))


@pytest.mark.parametrize("beta", [1.0, 3.0, 1e300])
def test_reverse_sigmoid_refuses_beta_that_leaves_the_simplex(beta):
    # for beta ≥ 1 an entry goes negative (beta 1e300 released L1 2.73 off the simplex, issue 11)
    with pytest.raises(ValueError, match=re.escape(f"defense.beta={beta!r} is invalid: beta must be a finite number "
                                                   "in [0, 1) (") + r".*simplex.*; set defense.beta=0.21"):
        ReverseSigmoid(beta, 0.2)


@pytest.mark.parametrize("beta", [0.0, 0.21, 0.5, 0.999])
@pytest.mark.parametrize("gamma", [0.2, 1.0, 3.0])
def test_reverse_sigmoid_below_one_keeps_the_simplex(beta, gamma):
    # the bound of the docstring, at its worst rows: one-hots (entries at 0 and 1), near-one-hots
    rows = _t([[1.0, 0.0, 0.0], [0.98, 0.01, 0.01], [0.5, 0.5, 0.0], [1 - 1e-12, 1e-12, 0.0]])
    out = ReverseSigmoid(beta, gamma).perturb(rows)
    assert (out > 0).all() or beta == 0.0
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(4, dtype=out.dtype), atol=1e-12)


# ---------------------------------------------------------------------------- pipeline rows
# The rows a victim really hands over (tests/realistic_rows.py): float32 LeNet softmax on
# the test set and the query pool, float16/bfloat16 rows (autocast), and rows with exact
# zeros, one-hots, ties and near-ties. Invariants are checked in the returned dtype.

PIPELINE = pipeline_params(10, 256)


def _first_argmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first maximum, whether it is the only maximum) per row, in x's own values."""
    top = x.max(1, keepdim=True).values
    return x.argmax(1), (x == top).sum(1) == 1


@pytest.mark.parametrize("name", sorted(DEFENSES))
@pytest.mark.parametrize("K,family", PIPELINE)
def test_contract_on_pipeline_rows(name, K, family, pipeline_rows):
    probs = pipeline_rows(K, family)
    factory, on_simplex, deterministic = DEFENSES[name]
    defense = factory()
    info = _xinfo(probs, 0) if defense.requires_xinfo else None
    out = defense.perturb(probs, info)
    assert out.dtype == release_dtype(probs.dtype)  # half precision is released as float32
    assert out.shape == probs.shape and out.device == probs.device
    assert not torch.isnan(out).any() and torch.isfinite(out).all()
    y, o = probs.double(), out.double()
    ulp = torch.finfo(out.dtype).eps
    if on_simplex:
        # as far from 1 as the inputs were (a float32 softmax row is off by ~1e-7, a
        # bfloat16 one by ~4e-3), plus the rounding to the returned dtype
        drift = (y.sum(1) - 1).abs()
        if info is not None:
            drift = torch.maximum(drift, (info.double().sum(1) - 1).abs())
        assert (o >= 0).all()
        assert ((o.sum(1) - 1).abs() <= drift + 4 * ulp).all()
    if defense.top1_preserve:
        m, strict_in = _first_argmax(y)
        m_out, strict_out = _first_argmax(o)
        assert torch.equal(m_out, m)  # the label, ties going to the lowest index
        # strictly first wherever the input's top is (MAD's vertex bump makes it strict
        # even for tied inputs): no rounding to the returned dtype may merge it
        must = torch.ones_like(strict_in) if isinstance(defense, MAD) else strict_in
        assert strict_out[must].all()
    if isinstance(defense, MAD):
        d = o - y
        dist = d.abs().sum(1) if defense.norm == "l1" else d.norm(dim=1)
        assert (dist <= defense.eps + 2 * ulp).all()
    if deterministic:
        assert torch.equal(_call(defense, probs, 0, simulate=True), out)
        assert torch.equal(_call(factory(), probs, 0), out)


def _topk_reference(y: torch.Tensor, k: int, one_hot: bool) -> torch.Tensor:
    """Per-row loop: the k largest entries, the lower index first among equal values."""
    out = torch.zeros_like(y)
    for i in range(y.shape[0]):
        row = y[i].tolist()
        keep = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        for j in keep:
            out[i, j] = 1.0 if one_hot else row[j]
    return out


@pytest.mark.parametrize("K,family", PIPELINE)
def test_exact_outputs_on_pipeline_rows(K, family, pipeline_rows):
    np = pytest.importorskip("numpy")
    probs = pipeline_rows(K, family)[:64]
    rd = release_dtype(probs.dtype)
    wide = probs.to(rd)  # exact: every half-precision value is a float32 value
    out = NoDefense().perturb(probs)
    assert torch.equal(out, wide) and out.data_ptr() != probs.data_ptr()
    hot = torch.nn.functional.one_hot(probs.double().argmax(1), K).to(rd)
    assert torch.equal(Top1().perturb(probs), hot)
    for k, one_hot in ((1, False), (2, False), (3, True)):
        expected = _topk_reference(wide, k, one_hot)
        assert torch.equal(TopK(k, one_hot=one_hot).perturb(probs), expected)
    for d in (1, 2, 3):  # numpy's round in the release dtype
        out = Rounding(d).perturb(probs)
        assert out.dtype == rd
        assert (out.numpy() == np.round(wide.numpy(), d)).all()


@pytest.mark.parametrize("beta,gamma", [(0.21, 0.2), (0.008, 0.2), (0.5, 1.5), (0.3, 2.5)])
@pytest.mark.parametrize("K,family", PIPELINE)
def test_reverse_sigmoid_formula_on_pipeline_rows(beta, gamma, K, family, pipeline_rows):
    # σ(γ·logit p) literally (finite at p = 0 and 1: logit = ∓inf), in float64
    probs = pipeline_rows(K, family)
    p = probs.double()
    s = torch.sigmoid(gamma * (torch.log(p) - torch.log1p(-p)))
    ytil = p - beta * (s - 0.5)
    expected = ytil / ytil.sum(1, keepdim=True)
    out = ReverseSigmoid(beta, gamma).perturb(probs)
    assert out.dtype == release_dtype(probs.dtype)
    ulp = torch.finfo(out.dtype).eps
    # rounding to the returned dtype (and the strict-top repair: one ulp more)
    torch.testing.assert_close(out.double(), expected, rtol=2 * ulp, atol=1e-15)


def test_reverse_sigmoid_keeps_a_near_tied_label_in_float32():
    # float32 rows whose top class (1) is one ulp above class 0: a strictly increasing g
    # keeps the order in float64, but the gap shrinks (g'(1/2) = 1 − βγ = 0.25 for β = 0.5,
    # γ = 1.5) and float32 rounding merged the two, handing the label to class 0 in most
    # rows before the strict-top repair
    g = torch.Generator().manual_seed(0)
    top = (0.3 + 0.19 * torch.rand(500, generator=g)).float()
    below = torch.nextafter(top, torch.zeros(()))
    rest = torch.rand(500, 8, generator=g)
    rest = (rest / rest.sum(1, keepdim=True) * (1.0 - top.double() - below.double())[:, None]).float()
    y = torch.cat([below[:, None], top[:, None], rest], 1)
    assert bool((y.argmax(1) == 1).all())
    defense = ReverseSigmoid(0.5, 1.5)
    assert defense.top1_preserve
    out = defense.perturb(y)
    m, strict = _first_argmax(out.double())
    assert bool((m == 1).all()) and bool(strict.all())


@pytest.mark.parametrize("K,family", PIPELINE)
def test_am_and_random_noise_formulas_on_pipeline_rows(K, family, pipeline_rows):
    probs = pipeline_rows(K, family)
    rd = release_dtype(probs.dtype)
    ulp = torch.finfo(rd).eps
    y = probs.double()
    info = _xinfo(probs, 3)
    for am in (AdaptiveMisinformation(0.7), AdaptiveMisinformation(0.3, adaptive=False)):
        h = (torch.sigmoid(1000.0 * (0.7 - y.max(1).values)) if am.adaptive
             else torch.full((y.shape[0],), 0.3, dtype=torch.float64))[:, None]
        out = am.perturb(probs, info)
        assert out.dtype == rd
        torch.testing.assert_close(out.double(), (1 - h) * y + h * info.double(), rtol=ulp, atol=1e-15)
    eps, seed = 0.8, 5
    out = RandomNoise(eps, "l1", "uniform", seed).perturb(probs)
    gen = make_generator(seed, "random-noise")
    delta = project_l1_ball(torch.rand(y.shape, generator=gen, dtype=torch.float64) * (2 * eps / K), eps)
    z = torch.sigmoid(torch.log(y) - torch.log1p(-y) + delta)
    assert out.dtype == rd
    torch.testing.assert_close(out.double(), z / z.sum(1, keepdim=True), rtol=ulp, atol=1e-15)


def test_pipeline_family_names_match_the_rows(pipeline_rows):
    for K in (10, 256):
        for name in family_names(K):
            rows = pipeline_rows(K, name)
            assert rows.dim() == 2 and rows.shape[1] == K
