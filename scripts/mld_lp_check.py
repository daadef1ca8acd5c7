"""Independent LP check of ModelGuard-W on the rows a victim really returns.

    python scripts/mld_lp_check.py [--rows 300] [--K 10 100 256] [--eps 0.5 1 2] [--lenet]

For float32 softmax rows of N(0, σ²) logits (σ cycling through 1, 2, 3, 6; with --lenet also
the float32 outputs of a LeNet trained for two epochs on the embedded MNIST, on its test set
and on the Fashion-MNIST query pool), compares the objective Σ_j log(ŷ_j + 1e-6)·y'_j of the
vector ``defense=mld`` releases with the optimum of the same LP solved by scipy's HiGHS
(tolerances 1e-10) on the row renormalised in float64, and checks every constraint on the
released float32 vector against the raw row. Prints, per (family, K, eps): rows checked, rows
more than 1e-5 above the optimum, the worst gap, and the worst constraint violation beyond
float32 rounding of the row. Exits 1 if any row fails. Needs scipy (pip install -e ".[test]").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modelguard.defense.mld import ModelGuardW  # noqa: E402
from tests.defense.lp_reference import highs_objective  # noqa: E402


def families(K: int, rows: int, lenet: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(K)
    sig = torch.tensor([1.0, 2.0, 3.0, 6.0]).repeat(rows // 4 + 1)[:rows, None]
    out = {"softmax_f32": torch.softmax(torch.randn(rows, K, generator=g) * sig, 1)}
    if lenet and K == 10:
        from tests.realistic_rows import lenet_rows

        lr = lenet_rows()
        out["lenet_test_f32"] = lr["test"][:rows]
        out["lenet_pool_f32"] = lr["pool"][:rows]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--K", type=int, nargs="+", default=[10, 100, 256])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--lenet", action="store_true", help="add a trained LeNet's rows at K = 10")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    failed = 0
    print(f"{'family':16s} {'K':>4s} {'eps':>4s} {'rows':>5s} {'>1e-5':>6s} {'worst gap':>10s} {'worst viol':>10s}")
    for K in args.K:
        for name, rows in families(K, args.rows, args.lenet).items():
            r64 = rows.double()
            off = (r64.sum(1) - 1).abs()
            m = rows.argmax(1, keepdim=True)
            cost = torch.log(r64 / r64.sum(1, keepdim=True) + 1e-6)
            for eps in args.eps:
                out = ModelGuardW(eps=eps).perturb(rows).double()
                ref = torch.tensor([highs_objective(r, eps) for r in rows], dtype=torch.float64)
                gap = (cost * out).sum(1) - ref
                u = torch.finfo(torch.float32).eps
                margin = (out.gather(1, m) - out).scatter(1, m, 1.0).amin(1)
                viol = torch.stack([
                    (out.sum(1) - 1).abs() - u,
                    -out.amin(1),
                    (out - r64).abs().sum(1) - eps - off - u,
                    1e-4 - 2 * u - margin,
                ], 1).amax(1).clamp(min=0)
                bad = int((gap > 1e-5).sum()) + int((viol > 0).sum())
                failed += bad
                print(f"{name:16s} {K:4d} {eps:4.1f} {len(rows):5d} {int((gap > 1e-5).sum()):6d} "
                      f"{float(gap.max()):10.2e} {float(viol.max()):10.2e}")
    print(f"{'FAILED' if failed else 'ok'}: {failed} bad rows; {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
