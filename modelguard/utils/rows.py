"""Row helpers shared by the defenses, ModelGuard-S and the recovery code: one distance, one
chunking loop."""
from __future__ import annotations

import torch

#: The norms :func:`row_distance` knows.
ROW_NORMS = ("l1", "l2", "l2_linalg")


def row_distance(a: torch.Tensor, b: torch.Tensor, norm: str, *,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """‖a − b‖ along the last dimension, for broadcastable ``a`` and ``b``.

    The one distance primitive of the defenses (MAD's line search), ModelGuard-S (its eps
    test, in the per-row definition and in the batched kernels) and the recovery table
    (the ε filter and the lookup), so that every fast path and its reference loop compare
    the same bits with eps or τ.

    ``norm``:

    - ``"l1"``: Σ|a − b|;
    - ``"l2"``: √Σ(a − b)², written out in elementwise ops (ModelGuard-S's L2: its
      batched kernels compute it in place in reused buffers);
    - ``"l2_linalg"``: ``torch.linalg.vector_norm(a − b, dim=-1)`` (MAD's and the
      table lookup's L2).

    The two L2 forms agree to about an ulp, not bitwise; each caller keeps the one its
    results were produced with.

    ``out``: a buffer of the broadcast shape (it may be ``a`` itself) that receives a − b;
    the reduction then runs in place in it, with no temporary. The bits are the same with
    or without it.
    """
    diff = a - b if out is None else torch.sub(a, b, out=out)
    if norm == "l1":
        return diff.abs_().sum(-1)
    if norm == "l2":
        return diff.mul_(diff).sum(-1).sqrt_()
    if norm == "l2_linalg":
        return torch.linalg.vector_norm(diff, dim=-1)
    raise ValueError(f"row_distance: norm must be one of {ROW_NORMS}, got {norm!r}")


def row_chunks(n: int, step: int):
    """``(start, stop)`` of consecutive slices of at most ``step`` rows covering ``range(n)``
    (a ``step`` below 1 counts as 1): the one chunking loop of the solvers, ModelGuard-S
    and the recovery code, which bound their temporaries by processing rows in chunks."""
    step = max(int(step), 1)
    return ((start, min(start + step, n)) for start in range(0, n, step))
