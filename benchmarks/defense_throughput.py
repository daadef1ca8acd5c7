"""Rows per second of every defense (and ModelGuard-S), ModelGuard-W against PuLP/CBC, and a
1,000,000-row K=256 table through ModelGuard-W.

Every option is built exactly as the pipeline builds it: composed from conf/ and
instantiated through Hydra. Inputs are softmax outputs of peaked logits (victim-like).
Medians over repeats; the CBC reference is measured in the same run.

    python benchmarks/defense_throughput.py [--quick] [--threads 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def victim_like(rows: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(rows, k, generator=g)
    logits[torch.arange(rows), torch.randint(k, (rows,), generator=g)] += 6.0
    return torch.softmax(logits, 1)


def build(group: str, option: str):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        cfg = compose("main", [f"{group}={option}"])
    return instantiate(cfg[group])


def rows_per_second(fn, probs: torch.Tensor, batch: int, reps: int, min_rows: int) -> float:
    """Median rows/s of fn over batches of ``batch`` rows (at least ``min_rows`` per repeat)."""
    n_batches = max(1, min_rows // batch)
    results = []
    for _ in range(reps):
        start = time.perf_counter()
        for i in range(n_batches):
            lo = (i * batch) % max(1, len(probs) - batch + 1)
            fn(probs[lo:lo + batch])
        if probs.is_cuda:
            torch.cuda.synchronize()
        results.append(n_batches * batch / (time.perf_counter() - start))
    return statistics.median(results)


def defense_fn(defense, k: int, device: str):
    if not defense.requires_xinfo:
        return defense.perturb
    side = victim_like(4096, k, seed=1).to(device)  # stands in for the proxy / misinformation outputs
    return lambda p: defense.perturb(p, side[: len(p)])


def cbc_seconds_per_row(k: int, n: int) -> float:
    from modelguard.defense.mld_lp import solve_mld_lp
    probs = victim_like(n, k, seed=2).double()
    times = []
    for i in range(n):
        start = time.perf_counter()
        solve_mld_lp(probs[i:i + 1], 1.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a 100k-row table")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 5
    device = args.device
    options = [("defense", p.stem) for p in sorted(Path(CONF, "defense").glob("*.yaml"))]
    options.append(("quantize", "modelguard_s"))
    print(f"threads={args.threads} device={device} torch={torch.__version__}")
    print(f"{'option':<26}{'K':>5}{'batch':>7}{'rows/s':>14}")
    mld_rate = None
    for group, option in options:
        for k in (10, 256):
            probs = victim_like(8192, k).to(device)
            for batch in (1, 32, 512):
                obj = build(group, option)
                if hasattr(obj, "to"):
                    obj = obj.to(device)
                fn = obj.quantize if group == "quantize" else defense_fn(obj, k, device)
                min_rows = 64 if batch == 1 else 4096
                if option == "mad" and k == 256:
                    min_rows = min(min_rows, 1024)
                rate = rows_per_second(fn, probs, batch, reps, min_rows)
                name = option if group == "defense" else f"quantize={option}"
                print(f"{name:<26}{k:>5}{batch:>7}{rate:>14,.0f}", flush=True)
                if option == "mld" and k == 256 and batch == 512:
                    mld_rate = rate
    cbc = cbc_seconds_per_row(256, 10 if args.quick else 30)
    print(f"\nPuLP/CBC, K=256, one LP per row (incl. model building): {cbc * 1e3:.1f} ms/row = {1 / cbc:,.0f} rows/s")
    print(f"mld exact / CBC at batch 512, K=256: {mld_rate * cbc:,.0f}x")
    rows = 100_000 if args.quick else 1_000_000
    mld = build("defense", "mld")
    table = victim_like(rows, 256, seed=3)
    start = time.perf_counter()
    for i in range(0, rows, 65536):
        mld.perturb(table[i:i + 65536].to(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    print(f"{rows:,}-row K=256 table through mld: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
