"""Pools through a vector index (``dns_index``): the ``similar`` and ``dissimilar`` pools are nearest-neighbour
queries (the user, or the negated user, against the normalised item table), which an inverted-file index
(faiss's ``IndexIVFFlat``, inner product) answers by scanning ``nprobe`` of its ``nlist`` lists instead of every
item. The index is built from the item table at every refresh; the users are queried in groups that fetch
enough neighbours to drop their excluded items and cut the band (ranks ``skip .. skip + k - 1`` of the
allowed ones); a user for whom the index returns too few allowed items gets the exact pool (:func:`build_pool`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_dns.dns.kernel import build_pool

#: ``dns_index``: ``exact`` (:func:`build_pool`), ``ivf`` (this module), ``auto`` (:func:`resolve_index`)
INDEXES = ("auto", "exact", "ivf")

#: ``auto`` uses the index on the CPU from this many items on (benchmarks/bench_refresh.py, docs/configuration.md)
AUTO_MIN_ITEMS = 200_000

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
    """The index's lists: ``sqrt(n_items)``, at most ``n_items / 40`` (k-means needs points per list). At 1e6
    items, 4000 lists take ~60 s of k-means on 2 cores against ~5 s for 1000 (benchmarks/bench_refresh.py)."""
    return max(1, min(int(round(math.sqrt(n_items))), n_items // _TRAIN_PER_LIST))


def build_ivf(item_n: np.ndarray, seed: int = 0):
    """An ``IndexIVFFlat`` (inner product) over the rows of ``item_n`` ``[n, d]`` (float32, C order), its
    k-means trained on ``40 nlist`` rows drawn with ``seed``."""
    import faiss

    n, d = item_n.shape
    nlist = n_lists(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    train = item_n
    if n > _TRAIN_PER_LIST * nlist:
        rows = np.random.default_rng(seed).choice(n, _TRAIN_PER_LIST * nlist, replace=False)
        train = item_n[np.sort(rows)]
    index.train(train)
    index.add(item_n)
    return index


def _excluded(keys: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Whether each (row, item) is in the sorted ``row * n_items + item`` keys."""
    query = rows.unsqueeze(1) * n_items + items
    pos = torch.searchsorted(keys, query).clamp_(max=max(keys.numel() - 1, 0))
    return keys[pos] == query if keys.numel() else torch.zeros_like(query, dtype=torch.bool)


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
) -> torch.LongTensor:
    """:func:`build_pool`'s ``similar``/``dissimilar`` pool through an IVF index: the same ``[n_users, k]``
    item ids (on the tables' device) up to the index's misses.

    ``nprobe`` lists of ``nlist`` (:func:`n_lists`) are scanned per user; each user asks for the next power of
    two above ``skip + k +`` its excluded items (so that the excluded ones can be dropped), in groups of at
    most ``memory_mb`` MiB of results. Users with fewer than ``skip + k`` allowed items among the results
    (few allowed items in all, or too few found) get :func:`build_pool`'s exact row.
    """
    import faiss

    if sampler not in ("similar", "dissimilar"):
        raise ValueError(f"the index serves the similar and dissimilar pools; got sampler {sampler!r}")
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    exclude = sp.csr_matrix(exclude)
    if exclude.shape != (n_users, n_items):
        raise ValueError(f"exclude must have shape {(n_users, n_items)}; got {exclude.shape}")
    exclude.sum_duplicates()
    exclude.sort_indices()
    device = user_emb.device
    kk = min(k + skip, n_items)
    item_n = np.ascontiguousarray(F.normalize(item_emb.detach().float(), dim=1).cpu().numpy())
    query = F.normalize(user_emb.detach().float(), dim=1).cpu()
    if sampler == "dissimilar":
        query = -query  # lowest cosine = highest inner product with the negated user
    query = query.numpy()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        index = build_ivf(item_n)
        index.nprobe = min(int(nprobe), index.nlist)
        counts = np.diff(exclude.indptr)
        keys = torch.as_tensor(np.repeat(np.arange(n_users, dtype=np.int64), counts) * n_items + exclude.indices)
        fetch = np.minimum(kk + counts, n_items)
        bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(fetch, 1))).astype(np.int64), n_items)
        pool = torch.empty((n_users, k), dtype=torch.long)
        exact_rows = []
        for size in np.unique(bucket):
            users = np.flatnonzero(bucket == size)
            # ids and scores from faiss (12 bytes a result) and the masks, keys and ranks below (~40 more)
            per_chunk = max(1, int(memory_mb * 2**20) // (52 * int(size)))
            for start in range(0, len(users), per_chunk):
                rows = users[start : start + per_chunk]
                _, found = index.search(query[rows], int(size))
                found = torch.from_numpy(found)
                rows_t = torch.from_numpy(rows)
                ok = (found >= 0) & ~_excluded(keys, rows_t, found.clamp(min=0), n_items)
                rank = ok.cumsum(1) - 1
                full = ok.sum(1) >= kk
                take = ok & (rank >= skip) & (rank < kk) & full.unsqueeze(1)
                pool[rows_t[full]] = found[take].view(-1, k)
                exact_rows.append(rows[~full.numpy()])
                del found, ok, rank, take
    finally:
        faiss.omp_set_num_threads(threads)
    missing = np.concatenate(exact_rows) if exact_rows else np.empty(0, dtype=np.int64)
    if missing.size:
        missing = np.sort(missing)
        idx = torch.as_tensor(missing, device=device)
        pool[torch.from_numpy(missing)] = build_pool(
            user_emb[idx], item_emb, exclude[missing], k, sampler, skip=skip
        ).cpu()
    return pool.to(device)
