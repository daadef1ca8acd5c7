"""ModelGuard-W: speed of the exact batched solver against PuLP + CBC (spec §6.4, §6.6).

    python benchmarks/mld_vs_lp.py [--quick] [--threads 1 2] [--family float32 peaked flat] [--device cpu]

Prints rows/s of :func:`solve_mld` for K ∈ {10, 256} × batch ∈ {1, 32, 512}, CBC's time per
row (model building included) measured in the same run, their ratio at batch 512 / K = 256,
and the time to build a 1,000,000-row K = 256 table in chunks. All figures are medians of
repeated runs. Inputs: ``float32`` = float32 softmax of N(0, 3²) logits, the rows a victim
really returns (they sum to 1 only within ~2e-7), ``peaked`` = float64 softmax of N(0, 6²)
logits, ``flat`` = Dirichlet(10) in float64.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from modelguard.defense.mld_lp import solve_mld_lp
from modelguard.defense.mld_solver import solve_mld


def make_inputs(rows: int, K: int, family: str = "peaked", seed: int = 0,
                device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if family == "float32":
        y = torch.softmax(3.0 * torch.randn(rows, K, generator=g), 1)
    elif family == "peaked":
        y = torch.softmax(6.0 * torch.randn(rows, K, generator=g, dtype=torch.float64), 1)
    elif family == "flat":
        y = torch._standard_gamma(torch.full((rows, K), 10.0, dtype=torch.float64), generator=g)
        y = y / y.sum(1, keepdim=True)
    else:
        raise ValueError(f"family={family!r}: use float32, peaked or flat")
    return y.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_exact(K: int, batch: int, reps: int = 5, eps: float = 1.0, family: str = "peaked",
               device: str = "cpu") -> float:
    """Median seconds per row of solve_mld on ``batch`` rows (fresh rows each rep)."""
    times = []
    solve_mld(make_inputs(batch, K, family, 10_000, device), eps)  # warm-up
    for r in range(reps):
        y = make_inputs(batch, K, family, r, device)
        _sync(device)
        t0 = time.perf_counter()
        solve_mld(y, eps)
        _sync(device)
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def time_cbc(K: int, n: int = 24, eps: float = 1.0, family: str = "peaked") -> float:
    """Median seconds per instance of the PuLP + CBC LP (one model per row, building included)."""
    y = make_inputs(n, K, family, 123)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        solve_mld_lp(y[i:i + 1], eps)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_table(rows: int = 1_000_000, K: int = 256, chunk: int = 8192, eps: float = 1.0,
               family: str = "peaked", device: str = "cpu", reps: int = 1) -> float:
    """Median seconds to solve a ``rows``-row table in chunks of ``chunk`` rows (input
    generation excluded)."""
    times = []
    for r in range(reps):
        total = 0.0
        for lo in range(0, rows, chunk):
            y = make_inputs(min(chunk, rows - lo), K, family, 1_000_000 * r + lo, device)
            _sync(device)
            t0 = time.perf_counter()
            solve_mld(y, eps)
            _sync(device)
            total += time.perf_counter() - t0
        times.append(total)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer reps, 100k-row table extrapolated to 1M")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--family", nargs="+", default=["float32", "peaked", "flat"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--table-rows", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=8192)
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 7
    cbc_n = 12 if args.quick else 36
    table_rows = args.table_rows or (100_000 if args.quick else 1_000_000)

    print(f"torch {torch.__version__}, device {args.device}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n=== torch threads: {threads} ===")
        for family in args.family:
            print(f"-- inputs: {family}, eps = 1.0")
            per_row = {}
            for K in (10, 256):
                for batch in (1, 32, 512):
                    r = max(reps, 3) if batch > 1 else reps
                    s = time_exact(K, batch, r, family=family, device=args.device)
                    per_row[K, batch] = s
                    print(f"exact  K={K:3d} batch={batch:3d}: {1 / s:12,.0f} rows/s  ({s * 1e6:9.1f} µs/row)")
            cbc = time_cbc(256, cbc_n, family=family)
            cbc10 = time_cbc(10, cbc_n, family=family)
            print(f"CBC    K= 10 per row: {cbc10 * 1e3:8.2f} ms   (ratio vs exact batch 512: {cbc10 / per_row[10, 512]:,.0f}x)")
            print(f"CBC    K=256 per row: {cbc * 1e3:8.2f} ms   (ratio vs exact batch 512: {cbc / per_row[256, 512]:,.0f}x)")
            t = time_table(table_rows, 256, args.chunk, family=family, device=args.device)
            scale = 1_000_000 / table_rows
            note = "" if scale == 1 else f" (measured {table_rows:,} rows, scaled)"
            print(f"table  1,000,000 rows K=256 chunk {args.chunk}: {t * scale:8.1f} s{note}")


if __name__ == "__main__":
    main()
