"""defense.base.row_distance and row_chunks: the shared distance and chunking helpers."""
from __future__ import annotations

import pytest
import torch

from modelguard.utils.rows import ROW_NORMS, row_chunks, row_distance


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_distance_norms_and_out_buffer(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 7, generator=g, dtype=dtype)
    b = torch.rand(50, 7, generator=g, dtype=dtype)
    diff = a - b
    assert torch.equal(row_distance(a, b, "l1"), diff.abs().sum(-1))
    assert torch.equal(row_distance(a, b, "l2"), (diff * diff).sum(-1).sqrt())
    assert torch.equal(row_distance(a, b, "l2_linalg"), torch.linalg.vector_norm(diff, dim=-1))
    for norm in ROW_NORMS:
        # the in-place form (the kernels' scratch buffers) gives the same bits, a is kept
        buf = torch.empty_like(a)
        assert torch.equal(row_distance(a, b, norm, out=buf), row_distance(a, b, norm))
        a2 = a.clone()
        assert torch.equal(row_distance(a2, b, norm, out=a2), row_distance(a, b, norm))
        # broadcasting: one query against many rows, rows in a [R, W, K] block
        assert torch.equal(row_distance(a, b[0], norm), row_distance(a, b[:1].expand_as(a), norm))
        block = a.view(10, 5, 7)
        assert torch.equal(row_distance(block, b[:10].unsqueeze(1), norm).reshape(-1),
                           row_distance(a, b[:10].repeat_interleave(5, 0), norm))
    with pytest.raises(ValueError, match="norm must be one of"):
        row_distance(a, b, "linf")


@pytest.mark.parametrize("n, step", [(0, 3), (1, 3), (7, 3), (9, 3), (5, 100), (4, 0), (4, -2)])
def test_row_chunks_cover_the_rows_in_order(n, step):
    chunks = list(row_chunks(n, step))
    covered = [i for a, b in chunks for i in range(a, b)]
    assert covered == list(range(n))
    assert all(0 < b - a <= max(step, 1) for a, b in chunks)
