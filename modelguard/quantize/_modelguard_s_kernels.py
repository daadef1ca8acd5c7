"""Batched kernels of ModelGuard-S (private; the semantics are in ``modelguard_s``).

Every function here computes what :meth:`ModelGuardS._quantize_sequential` (the per-row
definition) or the per-row frozen mapping computes, to the last bit, for a whole batch.
The tests check both against each other on many streams.

The codebook's class index (:class:`ClassIndex`) lists every class's centroids in creation
order as CSR arrays, kept up to date on append. It is the only index: the CPU kernels read
its numpy arrays, the torch kernels its tensors (:meth:`ClassIndex.on`), and the per-row
definition its per-class codebooks.

Vectorization. Rows whose answer is decided by the codebook as it stood before the batch
are resolved all at once: every row against the first (earliest) centroid of its class in
one dense pass (:func:`first_pass`: most rows hit it, and the earliest centroid within eps
wins), then the rows that missed it against the rest of their class
(:func:`second_pass` on the CPU, padded or ragged; :func:`lookup` with torch, ragged):
every (row, centroid) pair is formed, one distance per pair, and a segmented "first index
within eps" picks the answer. Only the remaining misses depend on order; they are resolved
by a greedy leader pass run for all classes at once: in each round the earliest unresolved
miss of every class creates a centroid and all later misses of that class within eps of it
take it. The number of rounds is the largest number of centroids one class creates in the
batch.

Two drivers: :func:`quantize_fast` (CPU, no Dirichlet search) does the bookkeeping in numpy
(its per-op overhead is a fraction of torch's, and the arrays are small) and
:func:`quantize_online` (any device, Dirichlet search) in torch. Every distance goes
through :func:`~modelguard.utils.rows.row_distance` (in reused float64 scratch buffers:
fresh multi-megabyte allocations cost more in page faults than the arithmetic), so every
comparison with eps is the per-row loop's.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from modelguard.utils.rows import row_chunks, row_distance

#: Upper bound on the elements of one [pairs, K] float64 temporary (about 32 MB).
_PAIR_BUDGET = 1 << 22
_BIG = torch.iinfo(torch.long).max


class ClassIndex:
    """Where every class's centroids are: the global indices grouped by class, in
    creation order within a class (CSR).

    ``perm`` [N]: the global indices, class 0's first; ``offset[k]``, ``count[k]`` [K]: the
    start and length of class k's segment; ``first[k] = perm[offset[k]]``, the earliest
    centroid of class k (some valid index for a class without centroids). numpy int64
    arrays, replaced (never written to) on append, so arrays and tensors handed out stay
    valid snapshots of the index as it was.
    """

    def __init__(self, num_classes: int) -> None:
        self.K = num_classes
        self.perm = np.zeros(0, dtype=np.int64)
        self.count = np.zeros(num_classes, dtype=np.int64)
        self.offset = np.zeros(num_classes, dtype=np.int64)
        self.first = np.zeros(num_classes, dtype=np.int64)
        self._tensors: tuple | None = None

    def append(self, classes: np.ndarray, n0: int) -> None:
        """Record centroids ``n0, n0 + 1, ...`` of ``classes`` (each at the end of its class)."""
        count, offset, first = self.count.copy(), self.offset.copy(), self.first
        if classes.size == 1:  # the common case of the per-row path: no sorting
            k = int(classes[0])
            at = int(offset[k] + count[k])
            perm = np.concatenate((self.perm[:at], np.array([n0], dtype=np.int64), self.perm[at:]))
            if count[k] == 0:
                first = first.copy()
                first[k] = n0
            count[k] += 1
            offset[k + 1:] += 1
        else:
            order = np.argsort(classes, kind="stable")
            n, m = self.perm.size, classes.size
            # final positions of the new entries: at the old end of their class's segment,
            # shifted by the new entries before them (creation order within a class)
            at = (offset + count)[classes[order]] + np.arange(m)
            old = np.ones(n + m, dtype=bool)
            old[at] = False
            perm = np.empty(n + m, dtype=np.int64)
            perm[at] = order + n0
            perm[old] = self.perm
            count += np.bincount(classes, minlength=self.K)
            offset = np.cumsum(count) - count
            first = perm[np.minimum(offset, n + m - 1)]
        self.perm, self.count, self.offset, self.first = perm, count, offset, first
        self._tensors = None

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(perm, count, offset, first) as tensors on ``device`` (views of the arrays on the
        CPU; copied once per change elsewhere)."""
        t = self._tensors
        if t is None or t[0] != device:
            arrays = (self.perm, self.count, self.offset, self.first)
            if device.type == "cpu":
                t = (device, *(torch.from_numpy(a) for a in arrays))
            else:
                t = (device, *(torch.from_numpy(a).to(device) for a in arrays))
            self._tensors = t
        return t[1:]


def scratch(store: dict, name: str, numel: int, device: torch.device) -> torch.Tensor:
    """A reused flat float64 buffer of at least ``numel`` values from ``store`` (grown by
    doubling, so repeated growth stays rare). Never returned to the quantizer's caller."""
    buf = store.get(name)
    if buf is None or buf.numel() < numel or buf.device != device:
        n = max(numel, 2 * buf.numel() if buf is not None and buf.device == device else 0)
        buf = torch.empty(n, dtype=torch.float64, device=device)
        store[name] = buf
    return buf[:numel]


def pair_distance(q, cents: torch.Tensor, gidx: torch.Tensor, y: torch.Tensor,
                  rows: torch.Tensor | None) -> torch.Tensor:
    """``row_distance(cents[gidx], y[rows])`` (``y`` itself if ``rows`` is None), both
    gathered into ``q``'s scratch buffers and reduced in place (same bits, no temporaries)."""
    P, K = gidx.numel(), cents.shape[1]
    diff = scratch(q._scratch, "diff", P * K, cents.device).view(P, K)
    torch.index_select(cents, 0, gidx, out=diff)
    if rows is not None:
        other = scratch(q._scratch, "other", P * K, cents.device).view(P, K)
        torch.index_select(y, 0, rows, out=other)
        y = other
    return row_distance(diff, y, q.norm, out=diff)


def first_pass(q, y: torch.Tensor, k: torch.Tensor):
    """Every row of ``y`` (classes ``k``) against the first centroid of its class, dense.

    Returns (g1, hit1): g1 the global index of that centroid per row, hit1 whether the
    row's class has centroids and the first is within eps. One gather, one subtraction and
    one reduction per row chunk, in scratch buffers: no pair list, no copy of y.
    """
    _, count, _, first = q._index.on(y.device)
    B, K = y.shape
    g1 = first[k]
    d = torch.empty(B, dtype=torch.float64, device=y.device)
    for a, b in row_chunks(B, _PAIR_BUDGET // max(K, 1)):
        d[a:b] = pair_distance(q, q._centroids, g1[a:b], y[a:b], None)
    return g1, (d <= q.eps) & (count[k] > 0)


def pairs(q, y: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, lo: int, cnt: torch.Tensor):
    """Distances of batch ``rows`` to the centroids ``lo .. lo + cnt - 1`` of their class
    (ragged, in chunks within the memory budget).

    Yields (a, b, local, within, d): the chunk covers rows[a:b]; for every pair, ``local``
    is the row's position in the chunk, ``within`` the centroid's index in its class and
    ``d`` the distance.
    """
    perm, _, offset, _ = q._index.on(y.device)
    dev = y.device
    R = rows.numel()
    cum = torch.cumsum(cnt, 0)
    total = int(cum[-1]) if R else 0
    per_chunk = max(1, _PAIR_BUDGET // q._K)
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
        yield a, b, local, within, pair_distance(q, q._centroids, gidx, y, r)


def lookup(q, y: torch.Tensor, k: torch.Tensor, nearest: bool, first=None):
    """Match rows against the current codebook (torch, any device).

    Returns (idx, hit): idx is the global centroid index chosen for every row (-1 if none),
    hit says whether it is within eps. idx is the earliest centroid within eps, or with
    ``nearest`` the nearest one (first minimum) for the rows without a hit.

    Two passes: :func:`first_pass` (or its result ``first``), then the rows that missed it
    against the rest of their class (ragged pairs).
    """
    B = y.shape[0]
    dev = y.device
    idx = torch.full((B,), -1, dtype=torch.long, device=dev)
    if q._n == 0 or B == 0:
        return idx, torch.zeros(B, dtype=torch.bool, device=dev)
    perm, count, offset, _ = q._index.on(dev)
    g1, hit = first if first is not None else first_pass(q, y, k)
    hit = hit.clone()
    idx = torch.where(hit, g1, idx)
    n_row = count[k]
    active = torch.nonzero(~hit & (n_row > 1)).squeeze(1)
    if active.numel():
        first_in = torch.full((active.numel(),), _BIG, dtype=torch.long, device=dev)
        for a, b, local, within, d in pairs(q, y, k, active, 1, n_row[active] - 1):
            cand = torch.where(d <= q.eps, within, _BIG)
            first_in[a:b].scatter_reduce_(0, local, cand, reduce="amin")
        h = first_in < _BIG
        done = active[h]
        idx[done] = perm[offset[k[done]] + first_in[h]]
        hit[done] = True
    if nearest:
        rest = torch.nonzero(~hit & (n_row > 0)).squeeze(1)
        if rest.numel():
            near = torch.full((rest.numel(),), _BIG, dtype=torch.long, device=dev)
            for a, b, local, within, d in pairs(q, y, k, rest, 0, n_row[rest]):
                dm = torch.full((b - a,), math.inf, dtype=torch.float64, device=dev)
                dm.scatter_reduce_(0, local, d, reduce="amin")
                cand = torch.where(d == dm[local], within, _BIG)
                nm = torch.full((b - a,), _BIG, dtype=torch.long, device=dev)
                nm.scatter_reduce_(0, local, cand, reduce="amin")
                near[a:b] = nm
            idx[rest] = perm[offset[k[rest]] + near]
    return idx, hit


def quantize_online(q, y: torch.Tensor) -> torch.Tensor:
    """The global centroid index answering every row of float64 ``y`` (codebook updated):
    torch on any device, with or without Dirichlet search."""
    dev = y.device
    k = torch.max(y, 1).indices  # first maximum on ties, like argmax (and faster on CPU)
    fp = first_pass(q, y, k) if q._n else None
    ans, hit = lookup(q, y, k, nearest=False, first=fp)  # global centroid per row
    miss = torch.nonzero(~hit).squeeze(1)  # batch rows, in batch order
    M = miss.numel()
    if M == 0:
        return ans
    # Greedy leader pass over the misses, all classes at once. Positions index ``miss``;
    # in every round the earliest unresolved miss of each class creates a centroid, and
    # the unresolved misses of that class within eps take it.
    km = k[miss]
    dirichlet = q.dirichlet_candidates > 0
    vbuf = torch.empty(M, q._K, dtype=torch.float64, device=dev) if dirichlet else None
    created: dict[int, list[torch.Tensor]] = {}
    leader_of = torch.empty(M, dtype=torch.long, device=dev)
    leaders = []
    pos = torch.arange(M, device=dev)
    while pos.numel():
        kp = km[pos]
        first = torch.full((q._K,), _BIG, dtype=torch.long, device=dev)
        first.scatter_reduce_(0, kp, pos, reduce="amin")
        lp = first[kp]  # the leader each unresolved miss is compared with
        is_leader = lp == pos
        lpos = pos[is_leader]
        leaders.append(lpos)
        if dirichlet:
            books = q._books()
            for p_, c_ in zip(lpos.tolist(), km[lpos].tolist()):
                prior = created.setdefault(c_, [])
                parts = ([books[c_]] if c_ in books else []) + prior
                existing = torch.cat(parts, 0) if parts else y.new_empty(0, q._K)
                v = q._new_centroid(y[int(miss[p_])], c_, existing)
                prior.append(v.unsqueeze(0))
                vbuf[p_] = v
            d = pair_distance(q, vbuf, lp, y, miss[pos])
        else:
            d = pair_distance(q, y, miss[lp], y, miss[pos])
        take = (d <= q.eps) | is_leader
        leader_of[pos[take]] = lp[take]
        pos = pos[~take]
    # Creation order = batch order of the creating rows (what the loop does).
    order = torch.sort(torch.cat(leaders)).values
    rank = torch.empty(M, dtype=torch.long, device=dev)
    rank[order] = torch.arange(order.numel(), device=dev)
    n0 = q._n
    q._append(vbuf[order] if dirichlet else y[miss[order]], km[order])
    ans[miss] = n0 + rank[leader_of]
    return ans


def quantize_fast(q, p: torch.Tensor) -> torch.Tensor:
    """:func:`quantize_online` for CPU batches without Dirichlet search, in few ops.

    ``p`` is the batch as float64 (widening it first is cheaper than a mixed-dtype
    subtraction in the dense pass). The bookkeeping runs in numpy on the class index.
    """
    B = p.shape[0]
    pn = p.numpy()
    k = pn.argmax(1)  # first maximum, like torch's argmax (rows are finite)
    ans = np.full(B, -1, dtype=np.int64)
    n0 = q._n
    if n0:
        index = q._index
        ck = index.count[k]
        g1 = index.first[k]
        g1t = torch.from_numpy(g1)
        d = torch.empty(B, dtype=torch.float64)
        for a, b in row_chunks(B, _PAIR_BUDGET // q._K):
            d[a:b] = pair_distance(q, q._centroids, g1t[a:b], p[a:b], None)
        hit = (d.numpy() <= q.eps) & (ck > 0)
        ans[hit] = g1[hit]
        rest = np.flatnonzero(~hit & (ck > 1))
        if rest.size:
            second_pass(q, p, k, rest, ans, hit)
        miss = np.flatnonzero(~hit)
    else:
        miss = np.arange(B)
    M = miss.size
    if M:
        km = k[miss]
        ym = pn[miss]  # [M, K], a copy (p may be a scratch buffer)
        leader_of, lead = leaders(q, ym, km)
        order = np.sort(lead)  # creation order = batch order of the creating rows
        rank = np.empty(M, dtype=np.int64)
        rank[order] = np.arange(order.size)
        q._append(torch.from_numpy(ym[order]), torch.from_numpy(km[order]))
        ans[miss] = n0 + rank[leader_of]
    return torch.from_numpy(ans)


def second_pass(q, p: torch.Tensor, k: np.ndarray, rest: np.ndarray, ans: np.ndarray,
                hit: np.ndarray) -> None:
    """The ``rest`` rows (their class's first centroid missed, more centroids left) against
    centroids 1.. of their class: earliest within eps, updating ``ans`` and ``hit`` in place.

    Padded: one gather of [rows, width, K] through the class index, width the largest
    class count among the rows minus one. Ragged (:func:`pairs`) when the padding would
    more than quadruple the pairs or exceed the memory budget (one large class among small
    ones).
    """
    index = q._index
    R, K = rest.size, q._K
    kr = k[rest]
    cr = index.count[kr]
    W = int(cr.max()) - 1
    npairs = int(cr.sum()) - R
    yr = p[torch.from_numpy(rest)]  # [R, K]
    if R * W * K <= _PAIR_BUDGET and R * W <= 4 * npairs:
        slot = np.arange(1, W + 1)
        valid = slot < cr[:, None]
        # [R, W] global indices; slots past a class's count point at some other centroid
        idx = np.take(index.perm, index.offset[kr][:, None] + slot, mode="clip")
        diff = scratch(q._scratch, "diff", R * W * K, p.device).view(R, W, K)
        torch.index_select(q._centroids, 0, torch.from_numpy(idx.reshape(-1)),
                           out=diff.view(R * W, K))
        dist = row_distance(diff, yr.unsqueeze(1), q.norm, out=diff)  # [R, W]
        ok = (dist.numpy() <= q.eps) & valid
        found = ok.any(1)
        j = ok.argmax(1)  # first True
        ans[rest[found]] = idx[found, j[found]]
    else:
        first_in = torch.full((R,), _BIG, dtype=torch.long)
        for a, b, local, within, dist in pairs(q, yr, torch.from_numpy(kr), torch.arange(R), 1,
                                               torch.from_numpy(cr - 1)):
            cand = torch.where(dist <= q.eps, within, _BIG)
            first_in[a:b].scatter_reduce_(0, local, cand, reduce="amin")
        fi = first_in.numpy()
        found = fi < _BIG
        ans[rest[found]] = index.perm[index.offset[kr[found]] + fi[found]]
    hit[rest[found]] = True


def leaders(q, ym: np.ndarray, km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy leader pass over the misses ``ym`` (classes ``km``, batch order), all classes
    at once (numpy bookkeeping, torch distances).

    Returns (leader_of, leaders): the position of the miss whose new centroid answers each
    miss, and the positions of the misses that create one.
    """
    M = km.size
    leader_of = np.empty(M, dtype=np.int64)
    lead_all = []
    pos = np.arange(M)
    while pos.size:
        kp = km[pos]
        _, head, inv = np.unique(kp, return_index=True, return_inverse=True)
        lead = pos[head]  # earliest unresolved miss of every class (pos is sorted)
        lead_all.append(lead)
        leader_of[lead] = lead
        if head.size == pos.size:  # one miss per class left: all of them lead
            break
        lp = lead[inv.reshape(-1)]
        other = lp != pos
        a, b = pos[other], lp[other]
        d = row_distance(torch.from_numpy(ym[b]), torch.from_numpy(ym[a]), q.norm)
        take = d.numpy() <= q.eps
        leader_of[a[take]] = b[take]
        pos = a[~take]
    return leader_of, np.concatenate(lead_all)
