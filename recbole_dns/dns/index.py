"""Pools through a vector index (``dns_index``): the ``similar`` and ``dissimilar`` pools are nearest-neighbour
queries (the user, or the negated user, against the normalised item table), which an inverted-file (IVF) index
answers by scanning ``nprobe`` of its ``nlist`` lists of items instead of every item.

The lists are k-means clusters of the normalised item table (faiss's ``Kmeans``, spherical), rebuilt at every
refresh. The search is list-major, in torch: a chunk of users picks its ``nprobe`` nearest centroids; a first
pass over each user's four nearest lists gives a score that its ``skip + k``-th allowed item must reach; then
every list scores all the users that probe it in one matrix product, masks their excluded items and keeps the
items at or above each user's threshold; one sort per chunk ranks each user's kept items and cuts the band
``skip .. skip + k - 1``. Scanning each list once for all its users turns the per-user heap walk of a classic
IVF search into dense products (faiss's own ``IndexIVFFlat.search`` took 2.2x longer at 1e5 x 1e6 for the same
pools, docs/benchmarks.md). A user whose probed lists hold fewer than ``skip + k`` allowed items gets the exact
pool (:func:`build_pool`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_dns.dns.kernel import build_pool

#: ``dns_index``: ``exact`` (:func:`build_pool`), ``ivf`` (this module), ``auto`` (:func:`resolve_index`)
INDEXES = ("auto", "exact", "ivf")

#: ``auto`` uses the index on the CPU from this many items on (benchmarks/bench_refresh.py, docs/configuration.md)
AUTO_MIN_ITEMS = 100_000

#: k-means training points per list (faiss warns below 39)
_TRAIN_PER_LIST = 40


def resolve_index(kind: str, n_items: int, device: torch.device | str, sampler: str) -> str:
    """``exact`` or ``ivf``: ``auto`` is the index for ``similar``/``dissimilar`` pools on the CPU from
    :data:`AUTO_MIN_ITEMS` items on, exact otherwise (on a GPU the exact product is a dense matmul);
    the ``random`` pool never uses an index."""
    if kind not in INDEXES:
        raise ValueError(f"dns_index must be one of {', '.join(INDEXES)}; got {kind!r}")
    if sampler == "random":
        return "exact"
    if kind == "auto":
        return "ivf" if torch.device(device).type == "cpu" and n_items >= AUTO_MIN_ITEMS else "exact"
    return kind


def n_lists(n_items: int) -> int:
    """The index's lists: ``sqrt(n_items)``, at most ``n_items / 40`` (k-means needs points per list)."""
    return max(1, min(int(round(math.sqrt(n_items))), n_items // _TRAIN_PER_LIST))


@dataclass
class IVFLists:
    """An inverted file over ``n`` normalised items: ``centroids [nlist, d]``, ``items [n, d]`` (the normalised
    rows sorted by list), ``ids [n]`` (their item ids) and ``offsets`` (host, ``nlist + 1``: list ``l`` is rows
    ``offsets[l] .. offsets[l + 1] - 1``); ``list_of``/``row_of`` ``[n]`` give each item id's list and row."""

    centroids: torch.Tensor
    items: torch.Tensor
    ids: torch.Tensor
    offsets: np.ndarray
    list_of: torch.Tensor
    row_of: torch.Tensor

    @property
    def nlist(self) -> int:
        return self.centroids.shape[0]


def build_ivf(item_n: torch.Tensor, seed: int = 0, memory_mb: float = 256.0) -> IVFLists:
    """The lists of the normalised rows ``item_n [n, d]``: spherical k-means (faiss, 10 iterations) on
    ``40 nlist`` rows drawn with ``seed``, then every row assigned to its nearest centroid (inner product)."""
    import faiss

    n, d = item_n.shape
    nlist = n_lists(n)
    if nlist == 1:  # fewer than 80 items: one list, no clustering
        centroids = F.normalize(item_n.float().mean(0, keepdim=True), dim=1)
    else:
        train = np.ascontiguousarray(item_n.detach().float().cpu().numpy())
        if n > _TRAIN_PER_LIST * nlist:
            train = train[np.sort(np.random.default_rng(seed).choice(n, _TRAIN_PER_LIST * nlist, replace=False))]
        kmeans = faiss.Kmeans(d, nlist, niter=10, seed=seed, spherical=True, max_points_per_centroid=_TRAIN_PER_LIST)
        kmeans.train(train)
        centroids = torch.from_numpy(kmeans.centroids).to(item_n.device)
    if item_n.device.type == "cpu" and nlist > 1:  # faiss's exhaustive search: 1.5x torch's product and argmax
        flat = faiss.IndexFlatIP(d)
        flat.add(np.ascontiguousarray(centroids.numpy()))
        list_of = torch.from_numpy(flat.search(np.ascontiguousarray(item_n.detach().float().numpy()), 1)[1][:, 0])
    else:
        step = max(1, int(memory_mb * 2**20) // (8 * nlist))
        list_of = torch.cat([(item_n[s : s + step].float() @ centroids.t()).argmax(1) for s in range(0, n, step)])
    ids = torch.argsort(list_of, stable=True)
    row_of = torch.empty_like(ids)
    row_of[ids] = torch.arange(n, device=ids.device)
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(torch.bincount(list_of, minlength=nlist).cpu().numpy())
    return IVFLists(centroids, item_n.float()[ids].contiguous(), ids, offsets, list_of, row_of)


def _blocks(ivf: IVFLists, q: torch.Tensor, probe: torch.Tensor, ex_users: torch.Tensor, ex_items: torch.Tensor):
    """For every list that some user of the chunk probes: ``(users, list's first row, scores [m, n_l])``, the
    probing users' inner products with the list's items, excluded ``(ex_users, ex_items)`` pairs at ``-inf``."""
    device, n_probe = q.device, probe.shape[1]
    order = torch.argsort(probe.reshape(-1), stable=True)  # the (user, probe) pairs grouped by list
    user_of = order // n_probe
    starts = np.zeros(ivf.nlist + 1, dtype=np.int64)
    starts[1:] = np.cumsum(torch.bincount(probe.reshape(-1), minlength=ivf.nlist).cpu().numpy())
    # the excluded pairs in a probed list, as (position among the grouped pairs, row within the list)
    slot = torch.full((probe.shape[0], ivf.nlist), -1, dtype=torch.int32, device=device)
    slot.scatter_(1, probe, torch.arange(n_probe, dtype=torch.int32, device=device).expand_as(probe).contiguous())
    lists = ivf.list_of[ex_items]
    probed = slot[ex_users, lists]
    keep = probed >= 0
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    pos = rank[ex_users[keep] * n_probe + probed[keep].long()]
    col = ivf.row_of[ex_items[keep]] - torch.as_tensor(ivf.offsets, device=device)[lists[keep]]
    by_pos = torch.argsort(pos)
    pos, col = pos[by_pos], col[by_pos]
    bounds = torch.searchsorted(pos, torch.as_tensor(starts, device=device)).cpu().numpy()
    for lst in np.flatnonzero(np.diff(starts)):
        s, e, a, b = starts[lst], starts[lst + 1], int(ivf.offsets[lst]), int(ivf.offsets[lst + 1])
        if b == a:
            continue
        users = user_of[s:e]
        part = q[users] @ ivf.items[a:b].t()  # torch's product: numpy's made these small blocks 2x slower
        x, y = bounds[lst], bounds[lst + 1]
        if y > x:
            part[pos[x:y] - s, col[x:y]] = -math.inf
        yield users, a, part


@torch.no_grad()
def index_pool(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: sp.csr_matrix,
    k: int,
    sampler: str = "dissimilar",
    skip: int = 0,
    nprobe: int = 32,
    memory_mb: float = 256.0,
    seed: int = 0,
) -> torch.LongTensor:
    """:func:`build_pool`'s ``similar``/``dissimilar`` pool through an IVF index: the same ``[n_users, k]``
    item ids (on the tables' device) up to the index's misses.

    ``nprobe`` of the ``nlist`` lists (:func:`n_lists`) are scanned per user, exactly: a first pass over each
    user's four nearest lists gives a score that its ``skip + k``-th best is sure to reach, and the scan keeps
    only the items at or above it. Users are taken in chunks that fit ``memory_mb`` MiB. Users with fewer than
    ``skip + k`` allowed items in their probed lists get :func:`build_pool`'s exact row.
    """
    if sampler not in ("similar", "dissimilar"):
        raise ValueError(f"the index serves the similar and dissimilar pools; got sampler {sampler!r}")
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    exclude = sp.csr_matrix(exclude)
    if exclude.shape != (n_users, n_items):
        raise ValueError(f"exclude must have shape {(n_users, n_items)}; got {exclude.shape}")
    exclude.sum_duplicates()
    device = user_emb.device
    kk = min(k + skip, n_items)
    ivf = build_ivf(F.normalize(item_emb.detach().float(), dim=1), seed, memory_mb)
    query = F.normalize(user_emb.detach().float(), dim=1)
    if sampler == "dissimilar":
        query = -query  # lowest cosine = highest inner product with the negated user
    n_probe = min(int(nprobe), ivf.nlist)
    n_first = min(4, n_probe)
    indptr = exclude.indptr.astype(np.int64)
    indices = torch.as_tensor(exclude.indices.astype(np.int64), device=device)
    # a user of a chunk takes its centroid scores and probe slots (8 bytes a list), and its kept (user, score,
    # row) triples with their sort (~2 (skip + k) of them, ~64 bytes each); with transients a chunk's peak is
    # ~1.3-1.8x memory_mb (measured at 1e5 x 1e5; smaller chunks cost ~10% more time; docs/benchmarks.md)
    per_chunk = max(1, int(memory_mb * 2**20) // (16 * ivf.nlist + 128 * kk))
    pool = torch.empty((n_users, k), dtype=torch.long, device=device)
    missing = []
    for start in range(0, n_users, per_chunk):
        end = min(start + per_chunk, n_users)
        n = end - start
        q = query[start:end]
        probe = torch.topk(q @ ivf.centroids.t(), n_probe, dim=1).indices  # [n, P], nearest list first
        ex_users = torch.repeat_interleave(torch.arange(n, device=device),
                                           torch.as_tensor(np.diff(indptr[start : end + 1]), device=device))
        ex_items = indices[indptr[start] : indptr[end]]
        # the threshold: the kk-th best allowed score in the user's n_first nearest lists (none if fewer)
        first = torch.full((n, n_first * kk), -math.inf, device=device)
        fill = torch.zeros(n, dtype=torch.long, device=device)
        for users, _, part in _blocks(ivf, q, probe[:, :n_first], ex_users, ex_items):
            t = min(kk, part.shape[1])
            cols = fill[users].unsqueeze(1) + torch.arange(t, device=device)
            first[users.unsqueeze(1), cols] = part.topk(t, dim=1, sorted=False).values
            fill[users] += t
        # lowered by d float32 epsilons: two products of the same unit vectors (the scan's block has other users,
        # which a BLAS may sum in another order) differ by at most that; never below the lowest float (excluded
        # items, at -inf, never pass)
        slack = q.shape[1] * torch.finfo(torch.float32).eps
        tau = (first.topk(kk, dim=1).values[:, -1] - slack).clamp(min=torch.finfo(first.dtype).min)
        del first
        # the scan: every probed list's items at or above the user's threshold
        kept_users, kept_scores, kept_rows = [], [], []
        for users, a, part in _blocks(ivf, q, probe, ex_users, ex_items):
            r, c = torch.nonzero(part >= tau[users].unsqueeze(1), as_tuple=True)
            kept_users.append(users[r])
            kept_scores.append(part[r, c])
            kept_rows.append(c + a)
        users, scores, rows = torch.cat(kept_users), torch.cat(kept_scores), torch.cat(kept_rows)
        del kept_users, kept_scores, kept_rows
        # best first within each user, in one sort: user + (1 - score) / 4 orders by user, then by score
        # (descending); exact in float64 (a float32 score in [-1, 1] needs 26 bits, a user id below 2^26 the rest)
        by_user = torch.argsort(users.double() + (1.0 - scores.double()) / 4, stable=True)
        users, rows = users[by_user], rows[by_user]
        counts = torch.bincount(users, minlength=n)
        first_of = torch.cumsum(counts, 0) - counts
        place = torch.arange(users.numel(), device=device) - first_of[users]
        full = counts >= kk
        band = (place >= skip) & (place < kk) & full[users]
        pool[start:end][full] = ivf.ids[rows[band]].view(-1, k)
        missing.append(torch.nonzero(~full).flatten() + start)
    missing = torch.cat(missing).cpu().numpy()
    if missing.size:
        idx = torch.as_tensor(missing, device=device)
        pool[idx] = build_pool(user_emb[idx], item_emb, exclude[missing], k, sampler, skip=skip)
    return pool
