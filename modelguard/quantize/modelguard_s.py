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

Vectorization. Rows whose answer is decided by the codebook as it stood before the batch
are resolved all at once: every (row, centroid of the row's class) pair is formed as a
ragged list (the centroids are indexed class by class), one distance per pair, and a
segmented "first index within eps" picks the answer. Only the remaining misses depend on
order; they are resolved by a greedy leader pass run for all classes at once: in each
round the earliest unresolved miss of every class creates a centroid and all later misses
of that class within eps of it take it. The number of rounds is the largest number of
centroids one class creates in the batch. ``quantize_reference`` is the plain per-row
loop; the tests check that both give bit-identical outputs and codebooks. On CPU without
Dirichlet search (``_quantize_fast``) the bookkeeping runs in numpy on a per-class index
table kept up to date on append, and the second pass is one padded [rows, width, K]
gather (ragged when the padding would be wasteful); distances still use torch's reduction.

Randomness. Each Dirichlet search uses its own ``torch.Generator`` seeded from
(``seed``, class, index of the new centroid within its class). So the draws depend only
on the seed and the codebook's history, not on how the other classes' queries interleave
or how the stream is cut into batches. This is what makes the class-parallel pass exact.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from modelguard.defense.base import check_probs, release_dtype
from modelguard.quantize.base import Quantizer

_NORMS = ("l1", "l2")
_ALPHA_MIN = 1e-8
_MASK64 = (1 << 64) - 1
# Upper bound on the elements of one [pairs, K] float64 temporary (about 32 MB).
_PAIR_BUDGET = 1 << 22
# Upper bound on the entries of the padded [K, max centroids per class] index table; past
# it the table is dropped and the second pass goes ragged (see ``_second_pass``).
_TABLE_BUDGET = 1 << 22


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


def row_distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Distance between aligned rows of ``a`` and ``b`` (same shape [..., K]).

    The single distance primitive of this module: the vectorized path and the reference
    loop both use it, so their comparisons with eps agree to the last bit.
    """
    diff = a - b
    if norm == "l1":
        return diff.abs().sum(-1)
    return (diff * diff).sum(-1).sqrt()


def _grow_work(work: list | None, numel: int, device: torch.device) -> list:
    """The two reusable float64 buffers of ``work``, (re)allocated to hold ``numel`` values,
    doubling so repeated growth stays rare."""
    if work is None:
        work = []
    if not work or work[0].numel() < numel or work[0].device != device:
        n = max(numel, 2 * work[0].numel() if work else 0)
        work[:] = [torch.empty(n, dtype=torch.float64, device=device) for _ in range(2)]
    return work


def _pair_distance(cents: torch.Tensor, gidx: torch.Tensor, y: torch.Tensor,
                   rows: torch.Tensor | None, norm: str,
                   work: list | None = None) -> torch.Tensor:
    """``row_distance(cents[gidx], y[rows])`` (``y`` itself if ``rows`` is None) with
    fewer temporaries (same bits).

    ``work`` (a list holding up to two float64 buffers) is reused across calls: fresh
    multi-megabyte allocations cost more in page faults than the arithmetic itself.
    """
    P, K = gidx.numel(), cents.shape[1]
    work = _grow_work(work, P * K, cents.device)
    diff = work[0][: P * K].view(P, K)
    torch.index_select(cents, 0, gidx, out=diff)
    if rows is None:  # y is already aligned with gidx
        diff.sub_(y)
    else:
        other = work[1][: P * K].view(P, K)
        torch.index_select(y, 0, rows, out=other)
        diff.sub_(other)
    if norm == "l1":
        return diff.abs_().sum(-1)
    return diff.mul_(diff).sum(-1).sqrt_()


def _diff_distance(a: torch.Tensor, b: torch.Tensor, norm: str,
                   work: list | None = None) -> torch.Tensor:
    """``row_distance(a, b)`` for [n, K] tensors, the difference in a reused buffer."""
    n, K = a.shape
    work = _grow_work(work, n * K, a.device)
    diff = work[0][: n * K].view(n, K)
    torch.sub(a, b, out=diff)
    if norm == "l1":
        return diff.abs_().sum(-1)
    return diff.mul_(diff).sum(-1).sqrt_()


def _top1(y: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax, first maximum on ties (``max`` returns the same indices as
    ``argmax`` and is faster on CPU)."""
    return torch.max(y, 1).indices


def _check_number(name: str, value, *, allow_zero: bool = False, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"ModelGuardS: {name} must be a real number, got {value!r} "
                        f"({type(value).__name__}); fix it with {hint}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"ModelGuardS: {name} must be finite and {bound}, got {value!r}; "
                         f"fix it with {hint}")
    return value


class ModelGuardS(Quantizer):
    """Incremental per-class quantizer (ModelGuard-S, ordered mode, spec §7.3/§7.4)."""

    top1_preserve = True
    #: batches smaller than this take the per-row loop (cheaper than the batched path's
    #: fixed number of tensor ops); the answers are the same either way.
    sequential_below: int = 4

    def __init__(self, eps: float = 1.0, norm: str = "l1", frozen: bool = False,
                 dirichlet_candidates: int = 0, concentration: float = 10.0,
                 seed: int = 0) -> None:
        self.eps = _check_number("eps", eps, hint="quantize.eps=1.0 (the grid value)")
        if not isinstance(norm, str) or norm.lower() not in _NORMS:
            raise ValueError(f"ModelGuardS: norm must be one of {list(_NORMS)}, got {norm!r}; "
                             f"fix it with quantize.norm=l1 (the grid value)")
        self.norm = norm.lower()
        if not isinstance(frozen, bool):
            if isinstance(frozen, numbers.Integral) and int(frozen) in (0, 1):
                frozen = bool(frozen)
            else:
                raise TypeError(f"ModelGuardS: frozen must be a bool, got {frozen!r}; "
                                f"fix it with quantize.frozen=false or quantize.frozen=true")
        self.frozen = frozen
        if (isinstance(dirichlet_candidates, bool)
                or not isinstance(dirichlet_candidates, numbers.Integral)
                or dirichlet_candidates < 0):
            raise ValueError(f"ModelGuardS: dirichlet_candidates must be an int >= 0 "
                             f"(0 = the new centroid is the query itself, n > 0 = search "
                             f"n Dirichlet draws; the original used 1000), got "
                             f"{dirichlet_candidates!r}; fix it with "
                             f"quantize.dirichlet_candidates=0")
        self.dirichlet_candidates = int(dirichlet_candidates)
        self.concentration = _check_number(
            "concentration", concentration,
            hint="quantize.concentration=10.0 (the original's value)")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"ModelGuardS: seed must be an int, got {seed!r}; "
                            f"fix it with quantize.seed=0")
        self.seed = int(seed)
        self._reset(0)
        self._warned: set[int] = set()

    # ------------------------------------------------------------------ state
    def _reset(self, num_classes: int, device: torch.device | None = None) -> None:
        device = torch.device("cpu") if device is None else device
        self._K = int(num_classes)
        self._buf = torch.empty(0, self._K, dtype=torch.float64, device=device)
        self._cls = torch.empty(0, dtype=torch.long, device=device)
        self._n = 0
        self._version = 0
        self._index_version = -1
        self._ref_cache: tuple[int, dict[int, torch.Tensor]] | None = None
        self._work: list[torch.Tensor] = []  # scratch for pair distances (not state)
        self._scratch: dict[str, torch.Tensor] = {}  # reused [B, K] float64 buffers
        self._cast: tuple[torch.dtype, torch.Tensor, int] | None = None
        # Per-class index, kept up to date on append (numpy: tiny ops, low overhead):
        # count and first centroid of every class, and the padded table of the global
        # indices of every class's centroids in creation order (None once too large).
        self._tcnt = np.zeros(self._K, dtype=np.int64)
        self._tfirst = np.zeros(self._K, dtype=np.int64)
        self._tab: np.ndarray | None = np.zeros((self._K, 4), dtype=np.int64)

    def _buffer(self, name: str, rows: int, device: torch.device) -> torch.Tensor:
        """A reused [rows, K] float64 buffer (a fresh 1 MB tensor per batch costs more in
        page faults than the arithmetic on it). Never returned to the caller."""
        n = rows * self._K
        buf = self._scratch.get(name)
        if buf is None or buf.numel() < n or buf.device != device:
            buf = torch.empty(n, dtype=torch.float64, device=device)
            self._scratch[name] = buf
        return buf[:n].view(rows, self._K)

    def _ensure_setup(self, probs: torch.Tensor, scratch: bool = False,
                      convert: bool = True) -> torch.Tensor:
        """Validate ``probs`` and return it as float64 (detached as is with ``convert``
        False). With ``scratch`` a conversion goes to a reused buffer: the caller must not
        return it or keep it past the call."""
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
            self._index_version = -1
        if not convert:
            return p
        return self._as_float64(p, scratch)

    def _as_float64(self, p: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        if scratch and p.dtype != torch.float64 and p.shape[0]:
            return self._buffer("y", p.shape[0], p.device).copy_(p)
        return p.to(torch.float64)

    @property
    def _centroids(self) -> torch.Tensor:
        return self._buf[: self._n]

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
        self._table_append(classes.detach().cpu().numpy().astype(np.int64, copy=False), self._n)
        self._n = need
        self._version += 1

    def _table_append(self, c: np.ndarray, n0: int) -> None:
        """Record centroids ``n0, n0 + 1, ...`` of classes ``c`` in the class table."""
        cnt, m = self._tcnt, c.shape[0]
        if m == 1:  # the common case of the sequential path: no sorting
            cs, gs = c, np.array([n0], dtype=np.int64)
            slot = cnt[cs]
        else:
            order = np.argsort(c, kind="stable")
            cs, gs = c[order], order + n0
            start = np.ones(m, dtype=bool)
            start[1:] = cs[1:] != cs[:-1]
            heads = np.flatnonzero(start)
            rank = np.arange(m) - np.repeat(heads, np.diff(np.append(heads, m)))
            slot = cnt[cs] + rank
        fresh = slot == 0
        self._tfirst[cs[fresh]] = gs[fresh]
        cnt += np.bincount(cs, minlength=self._K)
        if self._tab is not None:
            top = int(slot.max()) + 1
            if top > self._tab.shape[1]:
                cap = max(top, 2 * self._tab.shape[1])
                if cap * self._K > _TABLE_BUDGET:
                    self._tab = None
                    return
                tab = np.zeros((self._K, cap), dtype=np.int64)
                tab[:, : self._tab.shape[1]] = self._tab
                self._tab = tab
            self._tab[cs, slot] = gs

    def _index(self):
        """(perm, count, offset): centroids grouped by class, creation order kept."""
        if self._index_version != self._version:
            cls = self._cls[: self._n]
            self._perm = torch.argsort(cls, stable=True)
            self._count = torch.bincount(cls, minlength=self._K)
            self._offset = torch.cumsum(self._count, 0) - self._count
            # global index of every class's first centroid (any valid index if empty)
            self._first = (self._perm[self._offset.clamp(max=self._n - 1)] if self._n
                           else torch.zeros(self._K, dtype=torch.long, device=cls.device))
            self._index_version = self._version
        return self._perm, self._count, self._offset

    def num_centroids(self) -> list[int]:
        """Number of centroids of every class (length K; empty before the first query)."""
        if self._K == 0:
            return []
        return torch.bincount(self._cls[: self._n], minlength=self._K).tolist()

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

    # ------------------------------------------------------- new centroid rule
    def _new_centroid(self, y: torch.Tensor, k: int, existing: torch.Tensor) -> torch.Tensor:
        """The centroid created for row y (class k) given C_k = ``existing`` at that moment."""
        n = self.dirichlet_candidates
        m = existing.shape[0]
        if n == 0 or m == 0:
            return y
        gen = torch.Generator(device="cpu").manual_seed(_mix64(self.seed, k, m))
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

    # ------------------------------------------------------------ vectorized
    def _pairs(self, y: torch.Tensor, k: torch.Tensor, rows: torch.Tensor,
               lo: int, cnt: torch.Tensor):
        """Distances of batch ``rows`` to the centroids ``lo .. lo + cnt - 1`` of their
        class (ragged, in chunks within the memory budget).

        Yields (a, b, local, within, d): the chunk covers rows[a:b]; for every pair,
        ``local`` is the row's position in the chunk, ``within`` the centroid's index in its
        class and ``d`` the distance.
        """
        perm, _, offset = self._index()
        dev = y.device
        R = rows.numel()
        cum = torch.cumsum(cnt, 0)
        total = int(cum[-1]) if R else 0
        per_chunk = max(1, _PAIR_BUDGET // self._K)
        if total <= per_chunk:
            bounds = [0, R]
        else:
            cuts = torch.searchsorted(cum, torch.arange(per_chunk, total, per_chunk, device=dev),
                                      right=True).tolist()
            bounds = sorted(set([0, R] + [c for c in cuts if 0 < c < R]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            nr = cnt[a:b]
            npairs = int(nr.sum())
            if npairs == 0:
                continue
            local = torch.repeat_interleave(torch.arange(b - a, device=dev), nr)
            start = torch.cumsum(nr, 0) - nr
            within = torch.arange(npairs, device=dev) - torch.repeat_interleave(start, nr) + lo
            r = rows[a:b][local]
            gidx = perm[offset[k[r]] + within]
            d = _pair_distance(self._centroids, gidx, y, r, self.norm, self._work)
            yield a, b, local, within, d

    def _first_pass(self, y: torch.Tensor, k: torch.Tensor):
        """Every row against the first (earliest) centroid of its class, dense.

        Returns (g1, hit1): g1 the global index of that centroid per row, hit1 whether the
        row's class has centroids and the first is within eps. One gather, one
        subtraction and one reduction per row chunk, all in a reused scratch buffer: no
        pair list, no copy of y.
        """
        _, count, _ = self._index()
        B, K = y.shape
        g1 = self._first[k]
        d = torch.empty(B, dtype=torch.float64, device=y.device)
        step = max(1, _PAIR_BUDGET // max(K, 1))
        for a in range(0, B, step):
            b = min(B, a + step)
            d[a:b] = _pair_distance(self._centroids, g1[a:b], y[a:b], None, self.norm,
                                    self._work)
        hit1 = (d <= self.eps) & (count[k] > 0)
        return g1, hit1

    def _lookup(self, y: torch.Tensor, k: torch.Tensor, nearest: bool, first=None):
        """Match rows against the current codebook.

        Returns (idx, hit): idx is the global centroid index chosen for every row (-1 if
        none), hit says whether it is within eps. idx is the earliest centroid within eps,
        or with ``nearest`` the nearest one (first minimum) for the rows without a hit.

        Two passes: every row against the first centroid of its class (``_first_pass``,
        or its result ``first``), then the rows that missed it against the rest of their
        class (ragged pairs). Most rows hit the first centroid (the earliest one wins), so
        they cost one distance, not one per centroid of the class.
        """
        B = y.shape[0]
        dev = y.device
        idx = torch.full((B,), -1, dtype=torch.long, device=dev)
        if self._n == 0 or B == 0:
            return idx, torch.zeros(B, dtype=torch.bool, device=dev)
        perm, count, offset = self._index()
        g1, hit = first if first is not None else self._first_pass(y, k)
        hit = hit.clone()
        idx = torch.where(hit, g1, idx)
        n_row = count[k]
        big = torch.iinfo(torch.long).max
        active = torch.nonzero(~hit & (n_row > 1)).squeeze(1)
        if active.numel():
            cnt = n_row[active] - 1
            first_in = torch.full((active.numel(),), big, dtype=torch.long, device=dev)
            for a, b, local, within, d in self._pairs(y, k, active, 1, cnt):
                cand = torch.where(d <= self.eps, within, big)
                first_in[a:b].scatter_reduce_(0, local, cand, reduce="amin")
            h = first_in < big
            done = active[h]
            idx[done] = perm[offset[k[done]] + first_in[h]]
            hit[done] = True
        if nearest:
            rest = torch.nonzero(~hit & (n_row > 0)).squeeze(1)
            if rest.numel():
                near = torch.full((rest.numel(),), big, dtype=torch.long, device=dev)
                for a, b, local, within, d in self._pairs(y, k, rest, 0, n_row[rest]):
                    dm = torch.full((b - a,), math.inf, dtype=torch.float64, device=dev)
                    dm.scatter_reduce_(0, local, d, reduce="amin")
                    cand = torch.where(d == dm[local], within, big)
                    nm = torch.full((b - a,), big, dtype=torch.long, device=dev)
                    nm.scatter_reduce_(0, local, cand, reduce="amin")
                    near[a:b] = nm
                idx[rest] = perm[offset[k[rest]] + near]
        return idx, hit

    def _quantize_online(self, y: torch.Tensor) -> torch.Tensor:
        """The global centroid index answering every row of y (codebook updated)."""
        dev = y.device
        k = _top1(y)
        fp = self._first_pass(y, k) if self._n else None
        ans, hit = self._lookup(y, k, nearest=False, first=fp)  # global centroid per row
        miss = torch.nonzero(~hit).squeeze(1)  # batch rows, in batch order
        M = miss.numel()
        if M:
            # Greedy leader pass over the misses, all classes at once. Positions index
            # ``miss``; in every round the earliest unresolved miss of each class creates
            # a centroid, and the unresolved misses of that class within eps take it.
            km = k[miss]
            dirichlet = self.dirichlet_candidates > 0
            vbuf = torch.empty(M, self._K, dtype=torch.float64, device=dev) if dirichlet else None
            created: dict[int, list[torch.Tensor]] = {}
            leader_of = torch.empty(M, dtype=torch.long, device=dev)
            leaders = []
            big = torch.iinfo(torch.long).max
            pos = torch.arange(M, device=dev)
            while pos.numel():
                kp = km[pos]
                first = torch.full((self._K,), big, dtype=torch.long, device=dev)
                first.scatter_reduce_(0, kp, pos, reduce="amin")
                lp = first[kp]  # the leader each unresolved miss is compared with
                is_leader = lp == pos
                lpos = pos[is_leader]
                leaders.append(lpos)
                if dirichlet:
                    books = self._books()
                    for p_, c_ in zip(lpos.tolist(), km[lpos].tolist()):
                        prior = created.setdefault(c_, [])
                        parts = ([books[c_]] if c_ in books else []) + prior
                        existing = torch.cat(parts, 0) if parts else y.new_empty(0, self._K)
                        v = self._new_centroid(y[int(miss[p_])], c_, existing)
                        prior.append(v.unsqueeze(0))
                        vbuf[p_] = v
                    d = _pair_distance(vbuf, lp, y, miss[pos], self.norm, self._work)
                else:
                    d = _pair_distance(y, miss[lp], y, miss[pos], self.norm, self._work)
                take = (d <= self.eps) | is_leader
                leader_of[pos[take]] = lp[take]
                pos = pos[~take]
            # Creation order = batch order of the creating rows (what the loop does).
            order = torch.sort(torch.cat(leaders)).values
            rank = torch.empty(M, dtype=torch.long, device=dev)
            rank[order] = torch.arange(order.numel(), device=dev)
            n0 = self._n
            vecs = vbuf[order] if dirichlet else y[miss[order]]
            self._append(vecs, km[order])
            ans[miss] = n0 + rank[leader_of]
        return ans

    # ------------------------------------------------- vectorized, CPU fast path
    def _quantize_fast(self, p: torch.Tensor) -> torch.Tensor:
        """``_quantize_online`` for CPU batches without Dirichlet search, in few ops.

        ``p`` is the batch as float64 (widening it first is cheaper than a mixed-dtype
        subtraction in the dense pass). The bookkeeping runs in numpy on the class table kept by ``_append``
        (numpy's per-op overhead is a fraction of torch's, and the arrays are small); every
        distance still goes through torch's reduction (``_pair_distance`` or
        ``row_distance``), so the comparisons with eps are the loop's to the last bit.
        """
        B = p.shape[0]
        pn = p.numpy()
        k = pn.argmax(1)  # first maximum, like torch's argmax (rows are finite)
        ans = np.full(B, -1, dtype=np.int64)
        n0 = self._n
        if n0:
            ck = self._tcnt[k]
            g1 = self._tfirst[k]
            g1t = torch.from_numpy(g1)
            d = torch.empty(B, dtype=torch.float64)
            step = max(1, _PAIR_BUDGET // self._K)
            for a in range(0, B, step):
                b = min(B, a + step)
                d[a:b] = _pair_distance(self._centroids, g1t[a:b], p[a:b], None, self.norm,
                                        self._work)
            hit = (d.numpy() <= self.eps) & (ck > 0)
            ans[hit] = g1[hit]
            rest = np.flatnonzero(~hit & (ck > 1))
            if rest.size:
                self._second_pass(p, k, rest, ans, hit)
            miss = np.flatnonzero(~hit)
        else:
            miss = np.arange(B)
        M = miss.size
        if M:
            km = k[miss]
            ym = pn[miss]  # [M, K], a copy (p may be a scratch buffer)
            leader_of, leaders = self._leaders(ym, km)
            order = np.sort(leaders)  # creation order = batch order of the creating rows
            rank = np.empty(M, dtype=np.int64)
            rank[order] = np.arange(order.size)
            self._append(torch.from_numpy(ym[order]), torch.from_numpy(km[order]))
            ans[miss] = n0 + rank[leader_of]
        return torch.from_numpy(ans)

    def _second_pass(self, p: torch.Tensor, k: np.ndarray, rest: np.ndarray,
                     ans: np.ndarray, hit: np.ndarray) -> None:
        """The ``rest`` rows (their class's first centroid missed, more centroids left)
        against centroids 1.. of their class: earliest within eps, updating ``ans`` and
        ``hit`` in place.

        Padded: one gather of [rows, width, K] from the class table, width the largest
        class count among the rows minus one. Ragged (``_pairs``) when the table is gone
        or the padding would more than quadruple the pairs or exceed the memory budget
        (one large class among small ones).
        """
        R, K = rest.size, self._K
        kr = k[rest]
        cr = self._tcnt[kr]
        W = int(cr.max()) - 1
        pairs = int(cr.sum()) - R
        yr = p[torch.from_numpy(rest)]  # [R, K]
        if self._tab is not None and R * W * K <= _PAIR_BUDGET and R * W <= 4 * pairs:
            idx = self._tab[kr, 1: W + 1]  # [R, W]; slots past a class's count hold 0
            valid = np.arange(1, W + 1) < cr[:, None]
            if len(self._work) < 1 or self._work[0].numel() < R * W * K:
                n = max(R * W * K, 2 * self._work[0].numel() if self._work else 0)
                self._work[:] = [torch.empty(n, dtype=torch.float64) for _ in range(2)]
            diff = self._work[0][: R * W * K].view(R, W, K)
            torch.index_select(self._centroids, 0, torch.from_numpy(idx.reshape(-1)),
                               out=diff.view(R * W, K))
            diff.sub_(yr.unsqueeze(1))
            flat = diff.view(R * W, K)
            if self.norm == "l1":
                dist = flat.abs_().sum(-1)
            else:
                dist = flat.mul_(flat).sum(-1).sqrt_()
            ok = (dist.numpy().reshape(R, W) <= self.eps) & valid
            found = ok.any(1)
            j = ok.argmax(1)  # first True
            ans[rest[found]] = idx[found, j[found]]
        else:
            perm, _, offset = self._index()
            kt = torch.from_numpy(kr)
            big = torch.iinfo(torch.long).max
            first_in = torch.full((R,), big, dtype=torch.long)
            for a, b, local, within, dist in self._pairs(yr, kt, torch.arange(R), 1,
                                                         torch.from_numpy(cr - 1)):
                cand = torch.where(dist <= self.eps, within, big)
                first_in[a:b].scatter_reduce_(0, local, cand, reduce="amin")
            fi = first_in.numpy()
            found = fi < big
            ans[rest[found]] = perm.numpy()[offset.numpy()[kr[found]] + fi[found]]
        hit[rest[found]] = True

    def _leaders(self, ym: np.ndarray, km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy leader pass over the misses ``ym`` (classes ``km``, batch order), all
        classes at once (numpy bookkeeping, torch ``row_distance``).

        Returns (leader_of, leaders): the position of the miss whose new centroid answers
        each miss, and the positions of the misses that create one.
        """
        M = km.size
        leader_of = np.empty(M, dtype=np.int64)
        leaders = []
        pos = np.arange(M)
        while pos.size:
            kp = km[pos]
            _, head, inv = np.unique(kp, return_index=True, return_inverse=True)
            lead = pos[head]  # earliest unresolved miss of every class (pos is sorted)
            leaders.append(lead)
            leader_of[lead] = lead
            if head.size == pos.size:  # one miss per class left: all of them lead
                break
            lp = lead[inv.reshape(-1)]
            other = lp != pos
            a, b = pos[other], lp[other]
            d = row_distance(torch.from_numpy(ym[b]), torch.from_numpy(ym[a]), self.norm)
            take = d.numpy() <= self.eps
            leader_of[a[take]] = b[take]
            pos = a[~take]
        return leader_of, np.concatenate(leaders)

    def quantize(self, probs: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.simulate(probs)
        p = self._ensure_setup(probs, convert=False)
        B = p.shape[0]
        dtype = release_dtype(probs.dtype)
        if B == 0:
            return probs.to(dtype, copy=True)
        if B < self.sequential_below:
            return self._quantize_sequential(self._as_float64(p)).to(dtype=dtype)
        if p.device.type == "cpu" and self.dirichlet_candidates == 0:
            ans = self._quantize_fast(self._as_float64(p, scratch=True))
        else:
            ans = self._quantize_online(self._as_float64(p, scratch=True))
        return self._centroids_as(dtype).index_select(0, ans)

    def simulate(self, probs: torch.Tensor) -> torch.Tensor:
        y = self._ensure_setup(probs)
        if y.shape[0] == 0:
            return probs.to(release_dtype(probs.dtype), copy=True)
        k = _top1(y)
        idx, _ = self._lookup(y, k, nearest=True)
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

    # ------------------------------------------------------------- sequential
    def _books(self) -> dict[int, torch.Tensor]:
        """Per-class codebooks {k: C_k [n_k, K]} in creation order (cached)."""
        if self._ref_cache is None or self._ref_cache[0] != self._version:
            perm, count, _ = self._index()
            present = torch.nonzero(count).squeeze(1)
            parts = self._centroids[perm].split(count[present].tolist())
            self._ref_cache = (self._version, dict(zip(present.tolist(), parts)))
        return self._ref_cache[1]

    def _quantize_sequential(self, y: torch.Tensor) -> torch.Tensor:
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
        self._ref_cache = (self._version, books)
        return out

    def quantize_reference(self, probs: torch.Tensor) -> torch.Tensor:
        """The sequential definition, one row at a time (the reference for tests and
        benchmarks; ``quantize`` also uses it for batches below ``sequential_below``)."""
        if self.frozen:
            return self.simulate(probs)
        y = self._ensure_setup(probs)
        return self._quantize_sequential(y).to(dtype=release_dtype(probs.dtype))
