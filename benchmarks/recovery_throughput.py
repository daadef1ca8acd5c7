"""Throughput of the adaptive-recovery side (defenses.md §9.1 and §10.1).

(a) Table build: Dirichlet sampling of clean rows (cf = 8, |X| = 50,000 estimation rows)
    plus ``simulate_table`` through a defense, for a 1,000,000-row table at K = 10 and
    K = 256. Defenses: ModelGuard-W (``mld``, ε = 1) and Reverse Sigmoid (γ = 0.2,
    β = 0.21 at K = 10 and 0.008 at K = 256, the grid's CIFAR10 / Caltech256 values).
(b) Lookup: ``TableLookup.recover`` (norm 1, tolerance 0.01, top-1 buckets) on 50,000
    released answers against the 1M-row table, and the per-row reference loop
    (``recover_reference``) on a subset in the same run, for the per-query ratio.

Times are medians over ``--repeats`` runs. ``--quick`` shrinks everything (100k rows,
5,000 queries, 100 reference queries) for a smoke run. Targets on 2 CPU cores: the 1M-row
K = 10 table built in under 2 minutes; the lookup at least 10x faster per query than the
loop.

    python benchmarks/recovery_throughput.py [--quick] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from modelguard.recover.lookup import TableLookup, recover_reference
from modelguard.recover.table import dirichlet_table_clean, simulate_table

RS_BETA = {10: 0.21, 100: 0.02, 200: 0.011, 256: 0.008}


def victim_like_posteriors(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Peaked softmax outputs with a balanced top-1, standing in for Y_true."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, k, generator=g)
    logits[torch.arange(n), torch.arange(n) % k] += 6.0
    return torch.softmax(logits, dim=1)


def _inline_reverse_sigmoid(beta: float, gamma: float = 0.2) -> Callable:
    """Reverse Sigmoid from defenses.md §2 (σ(γ·logit p) = p^γ / (p^γ + (1 − p)^γ))."""

    def simulate(p: torch.Tensor, xinfo=None) -> torch.Tensor:
        pg = p.pow(gamma)
        s = pg / (pg + (1.0 - p).pow(gamma))
        y = p - beta * (s - 0.5)
        return y / y.sum(dim=1, keepdim=True)

    return simulate


def make_defense(name: str, k: int) -> tuple[Callable | None, str]:
    """(simulate callable, note); (None, note) when the defense is not available."""
    if name == "mld":
        try:
            from modelguard.defense.mld import ModelGuardW
        except ImportError as err:
            return None, f"skipped: modelguard.defense.mld not available ({err})"
        return ModelGuardW(eps=1.0).simulate, "ModelGuardW(eps=1.0)"
    if name == "reverse_sigmoid":
        beta = RS_BETA.get(k, 0.02)
        try:
            from modelguard.defense.reverse_sigmoid import ReverseSigmoid
        except ImportError:
            return _inline_reverse_sigmoid(beta), f"inline §2 formula (beta={beta}, gamma=0.2): module absent"
        return ReverseSigmoid(beta=beta, gamma=0.2).simulate, f"ReverseSigmoid(beta={beta}, gamma=0.2)"
    raise ValueError(name)


def time_table_build(
    k: int, size: int, defense: Callable, n_x: int = 50_000, cf: float = 8.0, seed: int = 0
) -> dict[str, float]:
    """Wall seconds of the Dirichlet draw and of simulate_table for one table."""
    y_true = victim_like_posteriors(n_x, k, seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    clean, index = dirichlet_table_clean(y_true, size, cf, gen)
    t1 = time.perf_counter()
    simulate_table(clean, defense, index=index, progress=False)
    t2 = time.perf_counter()
    return {"dirichlet_s": t1 - t0, "simulate_s": t2 - t1, "total_s": t2 - t0}


def build_lookup_problem(k: int, size: int, n_queries: int, defense: Callable, n_x: int = 50_000, seed: int = 0):
    """A (clean, perturbed) table and the released answers on the estimation inputs."""
    y_true = victim_like_posteriors(n_x, k, seed)
    clean, index = dirichlet_table_clean(y_true, size, 8.0, torch.Generator().manual_seed(seed))
    perturbed = simulate_table(clean, defense, index=index, progress=False)
    released = defense(y_true[:n_queries], None)
    return clean, perturbed, released


def time_lookup(clean, perturbed, released, n_ref: int, norm: int = 1, tolerance: float = 0.01) -> dict[str, float]:
    """Per-query seconds of the batched lookup and of the reference loop, and their gap."""
    look = TableLookup(norm=norm, tolerance=tolerance).fit(clean, perturbed)
    t0 = time.perf_counter()
    out = look.recover(released)
    t1 = time.perf_counter()
    sub = released[:n_ref]
    ref = recover_reference((clean, perturbed), sub, norm, tolerance, True)
    t2 = time.perf_counter()
    return {
        "batched_ms_per_query": 1e3 * (t1 - t0) / released.shape[0],
        "reference_ms_per_query": 1e3 * (t2 - t1) / n_ref,
        "batched_total_s": t1 - t0,
        "max_abs_diff": float((out[:n_ref] - ref).abs().max()),
        "mean_within_tau_distance": look.last_mean_distance,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 256])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = 100_000 if args.quick else 1_000_000
    n_x = 5_000 if args.quick else 50_000
    n_queries = 5_000 if args.quick else 50_000
    n_ref = 100 if args.quick else 500
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, table {size:,} rows, "
          f"|X| = {n_x:,}, {n_queries:,} queries, reference on {n_ref}, median of {args.repeats}")

    print("\n(a) table build: Dirichlet (cf 8) + simulate_table")
    for k in args.classes:
        for name in ("mld", "reverse_sigmoid"):
            defense, note = make_defense(name, k)
            if defense is None:
                print(f"  K={k:<4} {name:<16} {note}")
                continue
            runs = [time_table_build(k, size, defense, n_x, seed=r) for r in range(args.repeats)]
            m = _median(runs)
            print(f"  K={k:<4} {name:<16} dirichlet {m['dirichlet_s']:7.2f} s  simulate {m['simulate_s']:7.2f} s  "
                  f"total {m['total_s']:7.2f} s   [{note}]")

    print("\n(b) lookup: TableLookup(norm 1, tol 0.01) vs per-row reference (reverse-sigmoid table)")
    for k in args.classes:
        defense, note = make_defense("reverse_sigmoid", k)
        clean, perturbed, released = build_lookup_problem(k, size, n_queries, defense, n_x)
        runs = [time_lookup(clean, perturbed, released, n_ref) for _ in range(args.repeats)]
        m = _median(runs)
        ratio = m["reference_ms_per_query"] / m["batched_ms_per_query"]
        print(f"  K={k:<4} batched {m['batched_ms_per_query']:.4f} ms/query ({m['batched_total_s']:.1f} s total)  "
              f"reference {m['reference_ms_per_query']:.3f} ms/query  ratio {ratio:.1f}x  "
              f"max|diff| {m['max_abs_diff']:.1e}  mean within-tau d {m['mean_within_tau_distance']:.4f}  [{note}]")


if __name__ == "__main__":
    main()
