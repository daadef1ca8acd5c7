"""The probability rows the pipeline really feeds a defense, for exactness and invariant tests.

Idealised float64 rows that sum to 1 exactly hide defects: a victim's float32 softmax rows sum
to 1 only within ~2e-7, GPU autocast gives float16/bfloat16, and trained models produce exact
zeros, near-one-hots and ties. Every family here is deterministic and built in seconds:

- ``lenet_rows()``: float32 softmax rows of a LeNet trained briefly on the embedded MNIST
  digits, on the victim's test set ("test") and on the Fashion-MNIST query pool ("pool"),
  with the logits they came from (trained once per process, ~5 s on one CPU thread).
- ``softmax_rows(K, n, sigma)``: float32 softmax of N(0, sigma²) logits, for K beyond 10.
- ``half_rows(rows, logits, dtype)``: what autocast hands over: the float32 rows cast to
  ``dtype`` and a softmax computed natively in ``dtype``.
- ``edge_rows(K, dtype)``: exact zeros, one-hots, all-tied, two-way ties at the top,
  near-ties (1 ulp apart), a max at the last index, and rows with entries of 1e-30.
- ``pipeline_families(K)``: name → rows for every family above at that K, used by
  parametrized tests; ``family_names(K)`` / ``pipeline_params(*Ks)`` give the names (and
  (K, name) pairs) without building rows, and the session fixture ``pipeline_rows(K,
  name)`` in ``tests/conftest.py`` builds each K once.
"""
from __future__ import annotations

import functools

import torch

HALF = (torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=1)
def lenet_rows(count: int = 512) -> dict[str, torch.Tensor]:
    """{"test", "pool"} → float32 softmax rows [count, 10]; {"test_logits", "pool_logits"} too."""
    from modelguard.arch.small import lenet
    from modelguard.dataset.embedded import EmbeddedMNIST
    from modelguard.engine import batches

    with torch.random.fork_rng():
        torch.manual_seed(0)
        data = EmbeddedMNIST(pool_size=2 * count, outlier_count=1, seed=0).load()
        model = lenet(data.num_classes, data.in_channels, data.image_size, data.mean, data.std)
        x, y = data.victim_train.tensors
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(2):
            for idx in batches(len(x), 64, gen):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        out = {}
        with torch.no_grad():
            for name, ds in (("test", data.victim_test), ("pool", data.query_pool)):
                logits = model(ds.tensors[0][:count]).float()
                out[name + "_logits"] = logits
                out[name] = torch.softmax(logits, 1)
    return out


def softmax_rows(K: int, n: int = 256, sigma: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 softmax rows, their logits) for N(0, sigma²) logits, [n, K]."""
    g = torch.Generator().manual_seed(seed * 1000 + K)
    logits = torch.randn(n, K, generator=g) * sigma
    return torch.softmax(logits, 1), logits


def half_rows(rows: torch.Tensor, logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float32 rows cast to ``dtype``, stacked on a softmax computed natively in ``dtype``."""
    return torch.cat([rows.to(dtype), torch.softmax(logits.to(dtype), 1)])


def edge_rows(K: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows with exact zeros, one-hots, ties and near-ties, valid probability vectors in ``dtype``."""
    rows = []
    eye = torch.eye(K, dtype=torch.float64)
    rows += [eye[0], eye[K - 1]]  # one-hots: the top first and last
    rows.append(torch.full((K,), 1.0 / K, dtype=torch.float64))  # all tied
    if K >= 2:
        two = torch.zeros(K, dtype=torch.float64)
        two[0] = two[K - 1] = 0.5
        rows.append(two)  # a two-way tie at the top, zeros elsewhere
        tie = torch.full((K,), 0.2 / max(K - 2, 1), dtype=torch.float64)
        tie[1] = tie[2 % K] = 0.4
        if K == 2:
            tie = torch.tensor([0.5, 0.5], dtype=torch.float64)
        rows.append(tie / tie.sum())  # a tie at the top among small equal classes
        last = torch.full((K,), 1e-8, dtype=torch.float64)
        last[K - 1] = 1.0
        rows.append(last / last.sum())  # the max at the last index, a tiny rest
        tiny = torch.full((K,), 1e-30, dtype=torch.float64)
        tiny[K // 2] = 0.7
        tiny[0] = 0.3
        rows.append(tiny / tiny.sum())  # entries of 1e-30 (exact zeros in half precision)
        zeros = torch.zeros(K, dtype=torch.float64)
        zeros[: max(1, K // 3)] = torch.linspace(1.0, 2.0, max(1, K // 3), dtype=torch.float64)
        rows.append(zeros / zeros.sum())  # a block of exact zeros
    out = torch.stack(rows).to(dtype)
    if K >= 2:
        # near-tie: the top two 1 ulp apart in ``dtype`` (computed in dtype, so it stays valid)
        near = torch.full((K,), 0.0, dtype=dtype)
        near[0] = 0.5
        near[1] = torch.nextafter(torch.tensor(0.5, dtype=torch.float32),
                                  torch.tensor(0.0)).to(dtype) if dtype not in HALF else 0.5 - torch.finfo(dtype).eps / 2
        near[2 % K] += 1.0 - near[:2].sum() if K > 2 else 0.0
        out = torch.cat([out, near[None]])
    return out


def family_names(K: int) -> list[str]:
    """The keys of ``pipeline_families(K)``, without building any rows (for parametrize)."""
    base = ["lenet_test", "lenet_pool"] if K == 10 else [f"softmax_f32_K{K}"]
    return base + ["half_float16", "half_bfloat16"] + [
        f"edge_{d}" for d in ("float32", "float64", "float16", "bfloat16")]


def pipeline_params(*Ks: int) -> list[tuple[int, str]]:
    """(K, family) pairs for ``@pytest.mark.parametrize("K,family", ...)``."""
    return [(K, name) for K in Ks for name in family_names(K)]


def pipeline_families(K: int) -> dict[str, torch.Tensor]:
    """Every family of pipeline-like rows at ``K`` classes, by name (float32 unless named)."""
    if K == 10:
        lr = lenet_rows()
        base = {"lenet_test": lr["test"], "lenet_pool": lr["pool"]}
        logits = torch.cat([lr["test_logits"], lr["pool_logits"]])
        rows32 = torch.cat([lr["test"], lr["pool"]])
    else:
        rows32, logits = softmax_rows(K)
        base = {f"softmax_f32_K{K}": rows32}
    fams = dict(base)
    for dt in HALF:
        fams[f"half_{str(dt).split('.')[-1]}"] = half_rows(rows32, logits, dt)
    for dt in (torch.float32, torch.float64) + HALF:
        fams[f"edge_{str(dt).split('.')[-1]}"] = edge_rows(K, dt)
    return fams
