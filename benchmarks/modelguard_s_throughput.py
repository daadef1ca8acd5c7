"""Throughput of ModelGuard-S ``quantize`` against the sequential per-row loop.

Each measurement starts from an empty codebook and feeds one realistic stream (softmax of
peaked logits, as a trained victim emits) batch by batch, so the codebook grows exactly as
it would during an attack. Both paths see the same stream in the same batches; the
median over ``reps`` repeats is reported.

    python benchmarks/modelguard_s_throughput.py [--rows 4096] [--reps 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    from modelguard.quantize.modelguard_s import ModelGuardS
except ImportError:  # run as a script from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modelguard.quantize.modelguard_s import ModelGuardS


def realistic_stream(K: int, rows: int, seed: int = 0) -> torch.Tensor:
    """Softmax of peaked logits: a random top class 6 to 14 logits above N(0, 1) noise.

    The top probability then spans about 0.5 to 1 for K = 256 (0.96 to 1 for K = 10),
    like a trained victim's answers.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, K, generator=g)
    top = torch.randint(0, K, (rows,), generator=g)
    margin = 6.0 + 8.0 * torch.rand(rows, generator=g)
    logits[torch.arange(rows), top] += margin
    return torch.softmax(logits, 1)


def _run(fn, y: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, y.shape[0], batch):
        fn(y[i: i + batch])
    return time.perf_counter() - start


def time_quantizer(K: int, batch: int, rows: int = 4096, eps: float = 1.0,
                   reps: int = 3, **kwargs) -> tuple[float, float]:
    """(vectorized rows/s, per-row loop rows/s), medians over ``reps`` fresh runs."""
    y = realistic_stream(K, rows)
    vec, loop = [], []
    for _ in range(reps):
        q = ModelGuardS(eps=eps, **kwargs)
        vec.append(rows / _run(q.quantize, y, batch))
        r = ModelGuardS(eps=eps, **kwargs)
        loop.append(rows / _run(r.quantize_reference, y, batch))
    return statistics.median(vec), statistics.median(loop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: the ops are small, and extra "
                         "threads only add contention; 0 keeps torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"ModelGuard-S quantize, {args.rows} rows, median of {args.reps}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'K':>4} {'eps':>4} {'batch':>5} {'vec rows/s':>11} {'loop rows/s':>11} "
          f"{'ratio':>6} {'centroids':>9}")
    ratios = {}
    for K in (10, 256):
        for eps in (1.0, 0.5):
            q = ModelGuardS(eps=eps)
            q.quantize(realistic_stream(K, args.rows))
            n = sum(q.num_centroids())
            for batch in (1, 32, 512):
                v, l = time_quantizer(K, batch, args.rows, eps, args.reps)
                print(f"{K:>4} {eps:>4} {batch:>5} {v:>11.0f} {l:>11.0f} {v / l:>6.1f} {n:>9}")
                if batch == 512:
                    ratios[K, eps] = v / l
    print("vectorized / loop at batch 512 (target >= 20x):")
    for (K, eps), r in ratios.items():
        print(f"  K={K:<4} eps={eps}: {r:.1f}x")


if __name__ == "__main__":
    main()
