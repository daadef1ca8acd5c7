"""ModelGuard-S (spec defenses.md §7.3/§7.4): the vectorized quantizer against the
sequential per-row definition, plus the contract (state, frozen mapping, errors)."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelguard.defense.base import release_dtype
from modelguard.quantize import _modelguard_s_kernels as kernels
from modelguard.quantize.modelguard_s import ModelGuardS, row_distance
from tests.realistic_rows import pipeline_params


# ----------------------------------------------------------------- streams
def make_stream(seed: int, K: int, rows: int, kind: str) -> torch.Tensor:
    """A [rows, K] float64 stream with repeated rows and exact ties.

    kind "soft": softmax of peaked logits; kind "grid": dyadic rows (counts / 8), so
    distances hit eps exactly and top-1 ties are frequent.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "soft":
        scale = torch.rand(rows, 1, generator=g, dtype=torch.float64) * 8
        y = torch.softmax(torch.randn(rows, K, generator=g, dtype=torch.float64) * scale, 1)
        tie = torch.rand(rows, generator=g) < 0.05  # exact uniform rows: all-class ties
        y[tie] = 1.0 / K
    else:
        idx = torch.randint(0, K, (rows, 8), generator=g)
        y = torch.zeros(rows, K, dtype=torch.float64).scatter_add_(
            1, idx, torch.ones(rows, 8, dtype=torch.float64)) / 8
    # Repeat earlier rows at random places.
    rep = torch.rand(rows, generator=g) < 0.3
    src = (torch.rand(rows, generator=g) * torch.arange(rows)).long()
    y[rep] = y[src[rep]].clone()
    return y


def split(y: torch.Tensor, sizes: list[int]):
    i, j = 0, 0
    while i < y.shape[0]:
        b = sizes[j % len(sizes)]
        yield y[i: i + b]
        i += b
        j += 1


def assert_same_state(a: ModelGuardS, b: ModelGuardS) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert torch.equal(sa["centroids"], sb["centroids"])
    assert torch.equal(sa["classes"], sb["classes"])


def simulate_reference(q: ModelGuardS, y: torch.Tensor) -> torch.Tensor:
    """Per-row frozen mapping of §7.4."""
    st_ = q.state_dict()
    out = y.clone()
    for i in range(y.shape[0]):
        k = int(y[i].argmax())
        book = st_["centroids"][st_["classes"] == k]
        if book.shape[0] == 0:
            continue
        d = row_distance(book, y[i].expand_as(book), q.norm)
        ok = torch.nonzero(d <= q.eps)
        out[i] = book[int(ok[0, 0])] if ok.numel() else book[int(d.argmin())]
    return out


# ------------------------------------------------- vectorized == sequential
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1),
       K=st.sampled_from([2, 3, 10, 100]),
       eps=st.sampled_from([0.01, 0.25, 0.5, 1.0, 1.9]),
       norm=st.sampled_from(["l1", "l2"]),
       kind=st.sampled_from(["soft", "grid"]),
       sizes=st.lists(st.sampled_from([1, 2, 7, 32, 128]), min_size=1, max_size=3))
def test_matches_sequential_reference(seed, K, eps, norm, kind, sizes):
    y = make_stream(seed, K, 200, kind)
    vec, ref = ModelGuardS(eps=eps, norm=norm), ModelGuardS(eps=eps, norm=norm)
    vec.sequential_below = 0  # the batched path even for batches of 1
    for batch in split(y, sizes):
        out = vec.quantize(batch)
        assert torch.equal(out, ref.quantize_reference(batch))
        # utility bound and top-1 label, per query
        assert bool((row_distance(out, batch, norm) <= eps).all())
        assert torch.equal(out.argmax(1), batch.argmax(1))
    assert_same_state(vec, ref)
    assert vec.num_centroids() == ref.num_centroids()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1),
       K=st.sampled_from([2, 3, 10, 100]),
       eps=st.sampled_from([0.05, 0.5, 1.0]),
       norm=st.sampled_from(["l1", "l2"]),
       kind=st.sampled_from(["soft", "grid"]),
       sizes=st.lists(st.sampled_from([1, 16, 64]), min_size=1, max_size=2))
def test_dirichlet_matches_sequential_reference(seed, K, eps, norm, kind, sizes):
    y = make_stream(seed, K, 120, kind)
    kw = dict(eps=eps, norm=norm, dirichlet_candidates=24, seed=seed % 7)
    vec, ref, again = ModelGuardS(**kw), ModelGuardS(**kw), ModelGuardS(**kw)
    vec.sequential_below = 0
    for batch in split(y, sizes):
        out = vec.quantize(batch)
        assert torch.equal(out, ref.quantize_reference(batch))
        assert torch.equal(out, again.quantize(batch))  # same seed, same answers
        assert bool((row_distance(out, batch, norm) <= eps).all())
        assert torch.equal(out.argmax(1), batch.argmax(1))
    assert_same_state(vec, ref)
    assert_same_state(vec, again)


def test_batching_does_not_change_answers():
    y = make_stream(3, 10, 400, "soft")
    one = ModelGuardS(eps=0.3)
    whole = one.quantize(y)
    rows = ModelGuardS(eps=0.3)
    per_row = torch.cat([rows.quantize(y[i: i + 1]) for i in range(y.shape[0])])
    assert torch.equal(whole, per_row)
    assert_same_state(one, rows)
    mixed = ModelGuardS(eps=0.3)  # alternate the per-row and batched paths
    out = torch.cat([mixed.quantize(b) for b in split(y, [1, 50, 2, 3, 9])])
    assert torch.equal(whole, out)
    assert_same_state(one, mixed)


def test_many_rounds_in_one_class():
    # 200 distinct rows of one class, tiny eps: every row creates a centroid.
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(torch.randn(200, 5, generator=g, dtype=torch.float64), 1)
    y[:, 0] = y.max(1).values + 1.0
    y = y / y.sum(1, keepdim=True)
    vec, ref = ModelGuardS(eps=1e-9), ModelGuardS(eps=1e-9)
    assert torch.equal(vec.quantize(y), y)
    ref.quantize_reference(y)
    assert_same_state(vec, ref)
    assert vec.num_centroids() == [200, 0, 0, 0, 0]


def test_lookup_chunking_is_exact(monkeypatch):
    y = make_stream(11, 10, 600, "soft")
    ref = ModelGuardS(eps=0.2)
    expected = [ref.quantize_reference(b) for b in split(y, [100])]
    monkeypatch.setattr(kernels, "_PAIR_BUDGET", 40)  # a few pairs per chunk
    vec = ModelGuardS(eps=0.2)
    for b, e in zip(split(y, [100]), expected):
        assert torch.equal(vec.quantize(b), e)
    assert_same_state(vec, ref)
    z = make_stream(12, 10, 200, "soft")
    assert torch.equal(vec.simulate(z), simulate_reference(vec, z))


def test_earliest_not_nearest():
    q = ModelGuardS(eps=1.0)
    a = torch.tensor([[0.9, 0.1, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)  # L1 0.8 from a: hits a
    q.quantize(a)
    assert torch.equal(q.quantize(b), a)
    c = torch.tensor([[0.4, 0.3, 0.3]], dtype=torch.float64)
    # c is nearer to b but b was never a centroid; a is within 1.0 (L1 = 1.0 exactly)
    assert torch.equal(q.quantize(c), a)
    assert q.num_centroids() == [1, 0, 0]


# ------------------------------------------------------------- behaviour
def test_repeated_queries_identical_and_dtype_kept():
    y = make_stream(5, 10, 256, "soft").float()
    q = ModelGuardS(eps=0.5)
    first = q.quantize(y)
    assert first.dtype == torch.float32 and first.device == y.device
    n = sum(q.num_centroids())
    assert torch.equal(q.quantize(y), first)
    assert torch.equal(q.quantize(y.flip(0)), first.flip(0))
    assert sum(q.num_centroids()) == n
    # every answer is a stored centroid, preserved in float64 inside
    assert torch.equal(q.simulate(y), first)


def test_frozen_creates_nothing():
    y = make_stream(6, 10, 100, "soft")
    live = ModelGuardS(eps=0.5)
    live.quantize(y[:50])
    frozen = ModelGuardS(eps=0.5, frozen=True)
    frozen.load_state_dict(live.state_dict())
    before = frozen.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = frozen.quantize(y[50:])
        assert torch.equal(out, live.simulate(y[50:]))
    after = frozen.state_dict()
    assert torch.equal(before["centroids"], after["centroids"])
    assert torch.equal(before["classes"], after["classes"])
    empty = ModelGuardS(frozen=True)
    with pytest.warns(RuntimeWarning):
        assert torch.equal(empty.quantize(y), y)
    assert sum(empty.num_centroids()) == 0


def test_simulate_matches_reference_and_never_grows():
    y = make_stream(7, 10, 300, "grid")
    q = ModelGuardS(eps=0.25)
    q.quantize(y[:150])
    n = q.num_centroids()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(q.simulate(y[150:]), simulate_reference(q, y[150:]))
    assert q.num_centroids() == n


def test_simulate_nearest_fallback_breaks_eps():
    q = ModelGuardS(eps=0.1)
    q.quantize(torch.tensor([[0.9, 0.1], [0.6, 0.4]], dtype=torch.float64))
    out = q.simulate(torch.tensor([[0.75, 0.25], [0.7, 0.3]], dtype=torch.float64))
    # 0.75 is equidistant (L1 0.3): first minimum wins; 0.7 is nearer to 0.6
    assert torch.equal(out, torch.tensor([[0.9, 0.1], [0.6, 0.4]], dtype=torch.float64))


def test_simulate_fresh_class_returns_row_and_warns_once():
    q = ModelGuardS(eps=0.5)
    q.quantize(torch.tensor([[0.8, 0.1, 0.1]]))
    y = torch.tensor([[0.1, 0.8, 0.1]] * 50 + [[0.1, 0.1, 0.8]] * 50)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert torch.equal(q.simulate(y), y)
        assert torch.equal(q.simulate(y), y)
    assert len(rec) == 1 and "[1, 2]" in str(rec[0].message)


def test_state_dict_round_trip():
    y = make_stream(8, 10, 400, "soft")
    a = ModelGuardS(eps=0.4, dirichlet_candidates=8, seed=3)
    a.quantize(y[:200])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"centroids", "classes"}
    assert state["centroids"].dtype == torch.float64 and state["classes"].dtype == torch.long
    b = ModelGuardS(eps=0.4, dirichlet_candidates=8, seed=3)
    b.load_state_dict(state)
    assert b.num_centroids() == a.num_centroids()
    assert torch.equal(a.quantize(y[200:]), b.quantize(y[200:]))
    assert_same_state(a, b)
    fresh = ModelGuardS().state_dict()
    ModelGuardS().load_state_dict(fresh)
    with pytest.raises(ValueError, match="argmax"):
        ModelGuardS().load_state_dict({"centroids": torch.tensor([[0.2, 0.8]], dtype=torch.float64),
                                       "classes": torch.tensor([0])})


def test_dirichlet_seed_changes_new_centroids():
    y = make_stream(9, 10, 200, "soft")
    a = ModelGuardS(eps=1.0, dirichlet_candidates=32, seed=0).quantize(y)
    b = ModelGuardS(eps=1.0, dirichlet_candidates=32, seed=1).quantize(y)
    assert not torch.equal(a, b)


def test_k_mismatch_and_shape_errors():
    q = ModelGuardS()
    q.quantize(torch.full((1, 4), 0.25))
    with pytest.raises(ValueError, match="K = 4"):
        q.quantize(torch.full((1, 5), 0.2))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        q.quantize(torch.full((4,), 0.25))
    assert q.quantize(torch.empty(0, 4)).shape == (0, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "quantize.eps="),
    (dict(eps=-1.0), "quantize.eps="),
    (dict(eps=math.inf), "quantize.eps="),
    (dict(eps="1"), "quantize.eps="),
    (dict(norm="linf"), r"quantize.norm=.*|\['l1', 'l2'\]"),
    (dict(frozen="yes"), "quantize.frozen="),
    (dict(dirichlet_candidates=-1), "quantize.dirichlet_candidates="),
    (dict(dirichlet_candidates=2.5), "quantize.dirichlet_candidates="),
    (dict(concentration=0.0), "quantize.concentration="),
    (dict(seed=1.5), "quantize.seed="),
])
def test_argument_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as err:
        ModelGuardS(**kwargs)
    bad = next(iter(kwargs.values()))
    assert repr(bad) in str(err.value)  # the message names the bad value


def test_hydra_config_matches_constructor():
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / "conf" / "quantize" / "modelguard_s.yaml"
    assert "ModelGuard-S" in path.read_text().splitlines()[0]
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert cfg.pop("_target_") == "modelguard.quantize.modelguard_s.ModelGuardS"
    params = inspect.signature(ModelGuardS.__init__).parameters
    assert cfg.pop("seed") == "${seed}"  # the run's seed, so a seed sweep varies the centroid draws
    assert cfg == {n: p.default for n, p in params.items() if n not in ("self", "seed")}


@pytest.mark.parametrize("budget", [None, 300])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_float32_wide_stream_matches_reference(monkeypatch, budget, norm):
    # K = 256 float32 rows (the dense first-centroid pass, the float32 answer table kept
    # incrementally, the reused float64 scratch); budget 300 cuts the first pass in chunks.
    if budget is not None:
        monkeypatch.setattr(kernels, "_PAIR_BUDGET", budget)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(900, 256, generator=g)
    logits[torch.arange(900), torch.randint(0, 256, (900,), generator=g)] += 8.0
    y = torch.softmax(logits, 1)
    y[5::7] = y[3::7][: y[5::7].shape[0]]  # repeats
    vec, ref = ModelGuardS(eps=0.6, norm=norm), ModelGuardS(eps=0.6, norm=norm)
    for batch in split(y, [300, 2, 128, 470]):
        out = vec.quantize(batch)
        assert out.dtype == torch.float32
        assert torch.equal(out, ref.quantize_reference(batch))
        assert torch.equal(vec.quantize(batch), out)  # the float32 table stays in sync
    assert_same_state(vec, ref)


# ------------------------------------------- CPU fast path: class index, passes
def assert_table_consistent(q: ModelGuardS) -> None:
    """The incrementally kept class index equals the one rebuilt from scratch."""
    classes = q.state_dict()["classes"]
    index = q._index
    assert index.perm.size == classes.numel()
    for c in range(q._K):
        members = torch.nonzero(classes == c).squeeze(1).tolist()
        assert index.count[c] == len(members)
        assert index.perm[index.offset[c]: index.offset[c] + index.count[c]].tolist() == members
        if members:
            assert index.first[c] == members[0]
    assert q.num_centroids() == torch.bincount(classes, minlength=q._K).tolist()


@pytest.mark.parametrize("budget", [None, 8])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_fast_path_padded_and_ragged_second_pass(monkeypatch, budget, norm):
    # Class 0 gets many centroids, classes 1.. exactly two (points a_c, b_c far apart).
    # Rows b_c miss their class's first centroid and hit the second: alone they take the
    # padded [rows, 1, K] pass; with a few class-0 rows the padding would be wasteful, so
    # the batch goes ragged. A tiny pair budget makes every second pass ragged.
    if budget is not None:
        monkeypatch.setattr(kernels, "_PAIR_BUDGET", budget)
    g = torch.Generator().manual_seed(21)
    K = 6
    big = torch.rand(60, K, generator=g, dtype=torch.float64)
    big[:, 0] = 2.0
    big = big / big.sum(1, keepdim=True)
    a = torch.full((K - 1, K), 0.02, dtype=torch.float64)
    b = a.clone()
    for c in range(1, K):
        a[c - 1, c] = 0.9
        b[c - 1, c] = 0.5
        b[c - 1, (c % (K - 1)) + 1] = 0.42  # rows are probability vectors (sum 1)
    vec, ref = ModelGuardS(eps=0.05, norm=norm), ModelGuardS(eps=0.05, norm=norm)
    calls = {"second": 0, "ragged": 0}
    second, pairs = kernels.second_pass, kernels.pairs

    def spy_second(*args, **kw):
        calls["second"] += 1
        return second(*args, **kw)

    def spy_pairs(*args, **kw):
        calls["ragged"] += 1
        return pairs(*args, **kw)

    monkeypatch.setattr(kernels, "second_pass", spy_second)
    monkeypatch.setattr(kernels, "pairs", spy_pairs)
    bs = b.repeat(6, 1)
    stream = [torch.cat([a, b, big]), bs, torch.cat([bs, big[-3:]]), bs[:9],
              torch.cat([big.flip(0), bs])]
    for batch in stream:
        before = dict(calls)
        out = vec.quantize(batch)
        assert torch.equal(out, ref.quantize_reference(batch))
        assert_table_consistent(vec)
        assert calls["second"] == before["second"] + (batch is not stream[0])
    assert_same_state(vec, ref)
    if budget is None:
        # only bs + 3 class-0 rows is ragged (3 rows widen 30 one-pair rows to 59);
        # bs alone is padded, and so is the batch of all 60 class-0 rows (little waste)
        assert calls["ragged"] == 1
    else:
        assert calls["ragged"] == calls["second"] == 4


def test_class_table_after_load_and_sequential_appends():
    y = make_stream(13, 10, 500, "grid")
    a = ModelGuardS(eps=0.25)
    for batch in split(y[:300], [1, 2, 64, 3]):  # per-row and batched appends
        a.quantize(batch)
        assert_table_consistent(a)
    b = ModelGuardS(eps=0.25)
    b.load_state_dict(a.state_dict())  # one multi-class append
    assert_table_consistent(b)
    assert torch.equal(a.quantize(y[300:]), b.quantize(y[300:]))
    assert_same_state(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fast_path_other_dtypes_match_reference(dtype):
    y = make_stream(17, 10, 300, "soft").to(dtype)
    vec, ref = ModelGuardS(eps=0.4), ModelGuardS(eps=0.4)
    for batch in split(y, [100, 7, 64]):
        out = vec.quantize(batch)
        assert out.dtype == release_dtype(dtype)  # half precision is released as float32
        assert torch.equal(out, ref.quantize_reference(batch))
    assert_same_state(vec, ref)


# ------------------------------------------------ the rows a victim really hands over
# tests/realistic_rows.py: float32 LeNet softmax (test set, query pool), float16/bfloat16
# rows, and rows with exact zeros, one-hots, ties and near-ties. Answers come back in
# release_dtype (float32 for half precision); label and eps are checked on those values.


def _check_answers(out: torch.Tensor, batch: torch.Tensor, eps: float, norm: str) -> None:
    assert out.dtype == release_dtype(batch.dtype)
    assert not torch.isnan(out).any()
    y, o = batch.double(), out.double()
    # the label (first maximum, as the codebooks are keyed) of the released values
    assert torch.equal(o.argmax(1), y.argmax(1))
    # the per-query utility bound holds exactly for what is released
    assert bool((row_distance(o, y, norm) <= eps).all())


def _simulate_reproduces(vec: ModelGuardS, stream: torch.Tensor, answers: torch.Tensor) -> None:
    """For the state a stream left, simulate gives every row of the stream the answer
    quantize gave it, and so does a frozen quantizer loaded from that state."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = vec.simulate(stream)
    assert torch.equal(sim, answers)
    assert torch.equal(sim, simulate_reference(vec, stream.to(sim.dtype)))
    frozen = ModelGuardS(eps=vec.eps, norm=vec.norm, frozen=True)
    frozen.load_state_dict(vec.state_dict())
    assert torch.equal(frozen.quantize(stream), answers)
    assert_same_state(frozen, vec)


@pytest.mark.parametrize("eps", [0.05, 1.0])
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
def test_pipeline_rows_match_sequential_reference(K, family, eps, norm, pipeline_rows):
    y = pipeline_rows(K, family)[:300]
    vec, ref = ModelGuardS(eps=eps, norm=norm), ModelGuardS(eps=eps, norm=norm)
    vec.sequential_below = 0  # the batched path even for batches of 1
    answers = []
    for batch in split(y, [64, 1, 100, 7]):
        out = vec.quantize(batch)
        assert torch.equal(out, ref.quantize_reference(batch))
        _check_answers(out, batch, eps, norm)
        answers.append(out)
    assert_same_state(vec, ref)
    _simulate_reproduces(vec, y, torch.cat(answers))
    # the default (per-row loop below 4 rows) gives the same answers and codebook
    again = ModelGuardS(eps=eps, norm=norm)
    assert torch.equal(torch.cat([again.quantize(b) for b in split(y, [64, 1, 100, 7])]), torch.cat(answers))
    assert_same_state(again, vec)


@pytest.mark.parametrize("K,family", pipeline_params(10, 100))
def test_pipeline_rows_dirichlet_match_sequential_reference(K, family, pipeline_rows):
    y = pipeline_rows(K, family)[:96]
    kw = dict(eps=0.5, norm="l1", dirichlet_candidates=16, seed=1)
    vec, ref = ModelGuardS(**kw), ModelGuardS(**kw)
    vec.sequential_below = 0
    answers = []
    for batch in split(y, [32, 1, 63]):
        out = vec.quantize(batch)
        assert torch.equal(out, ref.quantize_reference(batch))
        _check_answers(out, batch, 0.5, "l1")
        answers.append(out)
    assert_same_state(vec, ref)
    # every centroid of a float32 or half-precision stream is a float32 value (a row, or
    # a draw rounded before its checks), so what is released is what was checked against
    # eps and the label (a float64 stream keeps float64 rows as centroids)
    cents = vec.state_dict()["centroids"]
    if y.dtype != torch.float64:
        assert torch.equal(cents, cents.float().double())
    _simulate_reproduces(vec, y, torch.cat(answers))


@pytest.mark.parametrize("bad, what", [
    ([[0.2, 0.3, 0.5], [1.5, -0.2, 3.0]], "row 1 of 2 has a negative entry"),
    ([[0.2, 0.3, 0.5], [2.0, 1.0, 3.0]], "row 1 of 2 sums to 6"),
    ([[float("nan"), 0.5, 0.5]], "row 0 of 1 has a non-finite entry nan"),
])
def test_refuses_non_probability_rows(bad, what):
    for q in (ModelGuardS(), ModelGuardS(frozen=True)):
        for call in (q.quantize, q.simulate, q.quantize_reference):
            with pytest.raises(ValueError, match=f"ModelGuardS takes probability vectors, but {what}"):
                call(torch.tensor(bad))
        assert q.num_centroids() == []
