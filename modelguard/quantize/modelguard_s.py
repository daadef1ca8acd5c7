"""ModelGuard-S: the incremental (online) quantizer of spec defenses.md §7.

Only the **ordered** online mode (§7.3) and its frozen mapping (§7.4) are implemented.
The non-ordered mode with label buffers, the k-means reclustering and the pre-fitting
from a training set (§7.5, §12 item 11) are out of scope: they are not in the grid.

Semantics (identical to processing the rows one by one, in batch order):

- one codebook C_k per top-1 class k (ties of the argmax go to the lowest index),
  created lazily; centroids never move and are only appended;
- a row y with top class k is answered with the **earliest-created** centroid of C_k
  within ``eps`` (L1 or L2); if there is none a new centroid is appended to C_k and
  returned. The new centroid is y itself, or, with ``dirichlet_candidates = n > 0``
  (the original's ``optim``), the one of n draws from Dir(concentration·K·y) that lies
  within ``eps`` of y, keeps the argmax, and maximises the summed distance to the
  centroids C_k has at that moment (y when C_k is empty or no draw survives);
- a centroid created for one row is visible to the later rows of the same batch;
- ``simulate`` (and ``quantize`` with ``frozen=True``) never creates anything: earliest
  centroid within eps, else the nearest (which can break the eps bound, §12 item 9);
  a class without centroids returns the row unchanged, with one warning per class
  (rate limited, §12 item 9), never one per row.

Inputs and dtypes. Rows must pass the defenses' input check (``check_probs``: finite,
non-negative, summing to 1 within the dtype's tolerance); they are compared in float64
and answered in ``release_dtype`` of the input (float32 for float16/bfloat16, else the
input's dtype). A new centroid is the row itself or a Dirichlet draw rounded to float32,
so for float32 and half-precision streams the released answer is the stored centroid
exactly and the eps bound and the label hold for the released values, not only for the
float64 ones.

The batched path. ``quantize`` answers a batch with the kernels of
``_modelguard_s_kernels`` (vectorized over rows and classes, numpy bookkeeping on the CPU),
which give bit-identical answers and codebooks to ``quantize_reference``, the per-row
definition below (``_quantize_sequential``); batches below ``sequential_below`` rows take
the definition itself. The tests check the two against each other on many streams.

Randomness. Each Dirichlet search uses its own ``torch.Generator`` seeded from
(the named stream ``modelguard-s`` of ``seed``, class, index of the new centroid within its
class). So the draws depend only
on the seed and the codebook's history, not on how the other classes' queries interleave
or how the stream is cut into batches. This is what makes the class-parallel pass exact.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from modelguard.defense.base import check_probs, release_dtype
from modelguard.quantize import _modelguard_s_kernels as kernels
from modelguard.quantize.base import Quantizer
from modelguard.utils.checks import check_number
from modelguard.utils.rows import row_distance
from modelguard.utils.seed import stream_seed

__all__ = ["ModelGuardS", "row_distance"]

_NORMS = ("l1", "l2")
_ALPHA_MIN = 1e-8
_MASK64 = (1 << 64) - 1


def _mix64(*values: int) -> int:
    """SplitMix64-style hash of integers: a seed for one Dirichlet search."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h & ((1 << 63) - 1)


class ModelGuardS(Quantizer):
    """Incremental per-class quantizer (ModelGuard-S, ordered mode, spec §7.3/§7.4).

    Distances are :func:`~modelguard.utils.rows.row_distance` with ``norm`` "l1" or "l2"
    (also importable from here as ``row_distance``).
    """

    top1_preserve = True
    #: batches smaller than this take the per-row loop (cheaper than the batched path's
    #: fixed number of tensor ops); the answers are the same either way.
    sequential_below: int = 4

    def __init__(self, eps: float = 1.0, norm: str = "l1", frozen: bool = False,
                 dirichlet_candidates: int = 0, concentration: float = 10.0,
                 seed: int = 0) -> None:
        self.eps = check_number(eps, "quantize.eps", low=0, low_open=True,
                                fix="set quantize.eps=1.0 (the grid value)")
        if not isinstance(norm, str) or norm.lower() not in _NORMS:
            raise ValueError(f"quantize.norm={norm!r} is invalid: norm must be one of {list(_NORMS)}; "
                             f"set quantize.norm=l1 (the grid value)")
        self.norm = norm.lower()
        if not isinstance(frozen, bool):
            if isinstance(frozen, numbers.Integral) and int(frozen) in (0, 1):
                frozen = bool(frozen)
            else:
                raise ValueError(f"quantize.frozen={frozen!r} is invalid: frozen must be true or false; "
                                 f"set quantize.frozen=false or quantize.frozen=true")
        self.frozen = frozen
        self.dirichlet_candidates = check_number(
            dirichlet_candidates, "quantize.dirichlet_candidates", low=0, integer=True,
            note="0 = the new centroid is the query itself, n > 0 = search n Dirichlet draws; "
                 "the original used 1000",
            fix="set quantize.dirichlet_candidates=0")
        self.concentration = check_number(concentration, "quantize.concentration", low=0, low_open=True,
                                          fix="set quantize.concentration=10.0 (the original's value)")
        self.seed = check_number(seed, "quantize.seed", integer=True, fix="set quantize.seed=0")
        self._stream = stream_seed(self.seed, "modelguard-s")
        self._reset(0)
        self._warned: set[int] = set()

    # ------------------------------------------------------------------ state
    def _reset(self, num_classes: int, device: torch.device | None = None) -> None:
        """An empty codebook for ``num_classes`` classes: the centroids [N, K] float64 and
        their classes [N] in creation order (storage grown by doubling), and the class
        index over them."""
        device = torch.device("cpu") if device is None else device
        self._K = int(num_classes)
        self._buf = torch.empty(0, self._K, dtype=torch.float64, device=device)
        self._cls = torch.empty(0, dtype=torch.long, device=device)
        self._n = 0
        self._version = 0  # bumped on every append
        self._index = kernels.ClassIndex(self._K)
        self._books_cache: tuple[int, dict[int, torch.Tensor]] | None = None
        self._cast: tuple[torch.dtype, torch.Tensor, int] | None = None
        self._scratch: dict[str, torch.Tensor] = {}  # reused float64 buffers (not state)

    @property
    def _centroids(self) -> torch.Tensor:
        return self._buf[: self._n]

    def _append(self, cents: torch.Tensor, classes: torch.Tensor) -> None:
        m = cents.shape[0]
        if m == 0:
            return
        need = self._n + m
        if need > self._buf.shape[0]:
            cap = max(need, 2 * self._buf.shape[0], 16)
            buf = torch.empty(cap, self._K, dtype=torch.float64, device=self._buf.device)
            cls = torch.empty(cap, dtype=torch.long, device=self._buf.device)
            buf[: self._n] = self._buf[: self._n]
            cls[: self._n] = self._cls[: self._n]
            self._buf, self._cls = buf, cls
        self._buf[self._n: need] = cents
        self._cls[self._n: need] = classes
        self._index.append(classes.detach().cpu().numpy().astype(np.int64, copy=False), self._n)
        self._n = need
        self._version += 1

    def _books(self) -> dict[int, torch.Tensor]:
        """Per-class codebooks {k: C_k [n_k, K]} in creation order (cached)."""
        if self._books_cache is None or self._books_cache[0] != self._version:
            perm, count, _, _ = self._index.on(self._buf.device)
            present = torch.nonzero(count).squeeze(1)
            parts = self._centroids[perm].split(count[present].tolist())
            self._books_cache = (self._version, dict(zip(present.tolist(), parts)))
        return self._books_cache[1]

    def _centroids_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The centroids converted to ``dtype`` (the answers' dtype), kept up to date
        incrementally: centroids never change, so gathering from this copy equals
        converting the gathered float64 rows, with half the traffic for float32."""
        if dtype == torch.float64:
            return self._centroids
        c = self._cast
        if c is None or c[0] != dtype or c[1].device != self._buf.device:
            c = (dtype, torch.empty(0, self._K, dtype=dtype, device=self._buf.device), 0)
        _, table, filled = c
        if filled < self._n:
            if table.shape[0] < self._n:
                grown = torch.empty(self._buf.shape[0], self._K, dtype=dtype,
                                    device=self._buf.device)
                grown[:filled] = table[:filled]
                table = grown
            table[filled: self._n] = self._buf[filled: self._n]
            filled = self._n
        self._cast = (dtype, table, filled)
        return table[: self._n]

    def num_centroids(self) -> list[int]:
        """Number of centroids of every class (length K; empty before the first query)."""
        return self._index.count.tolist()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"centroids": self._centroids.detach().cpu().clone(),
                "classes": self._cls[: self._n].detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        try:
            cents, classes = state["centroids"], state["classes"]
        except KeyError as err:
            raise KeyError(f"ModelGuardS.load_state_dict: missing key {err}; expected "
                           f"'centroids' [N, K] and 'classes' [N]") from None
        cents = torch.as_tensor(cents).to(torch.float64)
        classes = torch.as_tensor(classes).to(torch.long)
        if cents.dim() != 2 or classes.dim() != 1 or cents.shape[0] != classes.shape[0]:
            raise ValueError(f"ModelGuardS.load_state_dict: expected centroids [N, K] and "
                             f"classes [N], got {tuple(cents.shape)} and {tuple(classes.shape)}")
        N, K = cents.shape
        if N and not bool((cents.argmax(1) == classes).all()):
            raise ValueError("ModelGuardS.load_state_dict: every centroid's argmax must equal "
                             "its class (the top-1 label is preserved)")
        device = self._buf.device
        self._reset(K, device)
        self._append(cents.to(device), classes.to(device))

    def __repr__(self) -> str:
        return (f"ModelGuardS(eps={self.eps}, norm={self.norm!r}, frozen={self.frozen}, "
                f"dirichlet_candidates={self.dirichlet_candidates}, "
                f"concentration={self.concentration}, seed={self.seed}, "
                f"centroids={self._n})")

    # ------------------------------------------------------------------ input
    def _ensure_setup(self, probs: torch.Tensor) -> torch.Tensor:
        """Validate ``probs`` (detached, as is), creating the codebook on the first batch
        and following the batch's device."""
        if not isinstance(probs, torch.Tensor) or probs.dim() != 2:
            shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
            raise ValueError(f"ModelGuardS: expected probabilities of shape [B, K], got {shape}")
        if not probs.is_floating_point():
            raise TypeError(f"ModelGuardS: expected a floating-point tensor, got {probs.dtype}")
        K = probs.shape[1]
        if self._K == 0 and K == 0:
            raise ValueError("ModelGuardS: probabilities need at least one class (K >= 1)")
        if self._K and K != self._K:
            raise ValueError(f"ModelGuardS: the codebook has K = {self._K} classes but the "
                             f"batch has K = {K}; use one quantizer per victim model")
        p = probs.detach()
        # the defenses' input contract: finite, non-negative rows summing to 1 within the
        # dtype's tolerance (float32 softmax rows are off by ~2e-7 and valid); a refused
        # batch leaves the quantizer as it was
        check_probs(p, who="ModelGuardS")
        if self._K == 0:
            self._reset(K, probs.device)
        if self._buf.device != probs.device:
            self._buf = self._buf.to(probs.device)
            self._cls = self._cls.to(probs.device)
            self._books_cache = None
        return p

    def _as_float64(self, p: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """``p`` in float64. With ``scratch`` a conversion goes to a reused buffer (a fresh
        1 MB tensor per batch costs more in page faults than the arithmetic on it): the
        caller must not return it or keep it past the call."""
        if scratch and p.dtype != torch.float64 and p.shape[0]:
            buf = kernels.scratch(self._scratch, "y", p.shape[0] * self._K, p.device)
            return buf.view(p.shape[0], self._K).copy_(p)
        return p.to(torch.float64)

    # -------------------------------------------------------------- public API
    def quantize(self, probs: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.simulate(probs)
        p = self._ensure_setup(probs)
        B = p.shape[0]
        dtype = release_dtype(probs.dtype)
        if B == 0:
            return probs.to(dtype, copy=True)
        if B < self.sequential_below:
            return self._quantize_sequential(self._as_float64(p)).to(dtype=dtype)
        if p.device.type == "cpu" and self.dirichlet_candidates == 0:
            ans = kernels.quantize_fast(self, self._as_float64(p, scratch=True))
        else:
            ans = kernels.quantize_online(self, self._as_float64(p, scratch=True))
        return self._centroids_as(dtype).index_select(0, ans)

    def simulate(self, probs: torch.Tensor) -> torch.Tensor:
        y = self._as_float64(self._ensure_setup(probs))
        if y.shape[0] == 0:
            return probs.to(release_dtype(probs.dtype), copy=True)
        k = torch.max(y, 1).indices  # first maximum on ties, like argmax
        idx, _ = kernels.lookup(self, y, k, nearest=True)
        found = idx >= 0
        out = y.clone()
        if bool(found.any()):
            out[found] = self._centroids[idx[found]]
        if not bool(found.all()):
            empty = set(torch.unique(k[~found]).tolist()) - self._warned
            if empty:
                self._warned |= empty
                shown = sorted(empty)
                more = "" if len(shown) <= 10 else f" (and {len(shown) - 10} more)"
                warnings.warn(
                    f"ModelGuardS.simulate: no centroids yet for class(es) "
                    f"{shown[:10]}{more}; their rows are returned unchanged (spec §7.4). "
                    f"Warned once per class.", RuntimeWarning, stacklevel=2)
        return out.to(dtype=release_dtype(probs.dtype))

    def quantize_reference(self, probs: torch.Tensor) -> torch.Tensor:
        """The sequential definition, one row at a time (the reference for tests and
        benchmarks; ``quantize`` also uses it for batches below ``sequential_below``)."""
        if self.frozen:
            return self.simulate(probs)
        y = self._as_float64(self._ensure_setup(probs))
        return self._quantize_sequential(y).to(dtype=release_dtype(probs.dtype))

    # ---------------------------------------------------------- the definition
    def _quantize_sequential(self, y: torch.Tensor) -> torch.Tensor:
        """Rows one by one, in batch order: the earliest centroid of the row's class within
        eps answers it; otherwise a new centroid is appended to that class and answers it."""
        books = self._books()
        out = torch.empty_like(y)
        new_vecs, new_cls = [], []
        for i in range(y.shape[0]):
            row = y[i]
            c = int(row.argmax())
            book = books.get(c)
            if book is not None:
                d = row_distance(book, row.expand_as(book), self.norm)
                ok = torch.nonzero(d <= self.eps)
                if ok.numel():
                    out[i] = book[int(ok[0, 0])]
                    continue
                v = self._new_centroid(row, c, book)
                books[c] = torch.cat([book, v.unsqueeze(0)], 0)
            else:
                v = row
                books[c] = v.unsqueeze(0).clone()
            out[i] = v
            new_vecs.append(v)
            new_cls.append(c)
        if new_vecs:
            self._append(torch.stack(new_vecs), torch.tensor(new_cls, device=y.device))
        self._books_cache = (self._version, books)
        return out

    def _new_centroid(self, y: torch.Tensor, k: int, existing: torch.Tensor) -> torch.Tensor:
        """The centroid created for row y (class k) given C_k = ``existing`` at that moment."""
        n = self.dirichlet_candidates
        m = existing.shape[0]
        if n == 0 or m == 0:
            return y
        gen = torch.Generator(device="cpu").manual_seed(_mix64(self._stream, k, m))
        alpha = (self.concentration * self._K * y.cpu()).clamp_min(_ALPHA_MIN)
        g = torch._standard_gamma(alpha.expand(n, -1).contiguous(), generator=gen)
        s = g / g.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        # Candidates are rounded to float32, the coarsest dtype an answer is released in,
        # before the checks: the eps bound and the label then hold for the released
        # values exactly (a float64 draw rounded afterwards can merge its top two classes
        # or step past eps).
        s = s.to(torch.float32).to(device=y.device, dtype=torch.float64)
        keep = (row_distance(s, y.expand_as(s), self.norm) <= self.eps) & (s.argmax(1) == k)
        s = s[keep]
        if s.shape[0] == 0:
            return y
        p = 1.0 if self.norm == "l1" else 2.0
        total = torch.cdist(s, existing, p=p,
                            compute_mode="donot_use_mm_for_euclid_dist").sum(1)
        if bool(total.max() > 0):
            return s[int(total.argmax())]  # first maximum: strict > from 0
        return s[-1]  # all totals 0: the running best never moves past the last sample
