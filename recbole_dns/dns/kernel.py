"""The pool kernel (Eq. 4 of the paper): for every user, ``k`` allowed items by cosine similarity to the
user (the lowest for DNS), or ``k`` random ones, chunked to a memory bound."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_dns.defaults import default
from recbole_dns.shims import cpu_mm

SAMPLERS = ("dissimilar", "similar", "random")

#: ``dns_refresh_dtype`` -> the precision the refresh scores in.
REFRESH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


#: On the CPU, a chunk's score buffer is also kept to about this many MiB (but at least :data:`CPU_CHUNK_MIN_USERS`
#: users): a chunk that stays near the cores' caches through the product, the masking and the top-k is faster than
#: the largest one ``dns_refresh_mb`` allows (docs/benchmarks.md, "The refresh in cache-sized chunks": 0.72 -> 0.47 s
#: on amazon-beauty, 2.44 -> 1.50 s on gowalla)
CPU_CHUNK_MB = 16
#: fewer users than this make the product re-read a large item table too often (1e5 and 1e6 items, measured)
CPU_CHUNK_MIN_USERS = 64


def chunk_size_for(n_items: int, memory_mb: float, device: torch.device | str | None = None) -> int:
    """Users per chunk so that a chunk's score matrix and top-k work fit in ``memory_mb`` MiB.

    A chunk holds ``chunk x n_items`` scores (float32; one buffer reused for every chunk) plus,
    transiently, about as much again for ``torch.topk``'s work buffers; we budget 8 bytes per score.
    On a GPU the largest chunk is the fastest; on the CPU (``device`` ``cpu``) the score buffer is also capped
    at :data:`CPU_CHUNK_MB` (or :data:`CPU_CHUNK_MIN_USERS` users, whichever is more).
    """
    n_items = max(1, n_items)
    chunk = max(1, int(memory_mb * 2**20) // (8 * n_items))
    if device is not None and torch.device(device).type == "cpu":
        chunk = min(chunk, max(CPU_CHUNK_MIN_USERS, CPU_CHUNK_MB * 2**20 // (4 * n_items)))
    return chunk


#: rows of at least this many times ``k`` scores pick their blocks by a nested :func:`blocked_topk` (three
#: ``torch.topk`` calls of about ``(width / k) ** (1/3) * k`` scores each instead of two of ``sqrt(width / k) * k``;
#: faster at ratios 81 to 410, amazon-beauty and gowalla, level within the drift at 1e4, 1e6 items; docs/benchmarks.md,
#: "The refresh's top-k nested"; below 40, not measured, one level stays)
TOPK_NESTED_RATIO = 40


def topk_blocks(width: int, k: int, device: torch.device | str) -> tuple[int, ...]:
    """The block sizes :func:`blocked_topk` uses for rows of ``width`` scores on ``device``, outermost first: one
    block of about ``sqrt(width / k)`` (two ``torch.topk`` calls reading ``2 sqrt(width k)`` scores a row instead of
    ``width``), two of about ``(width / k) ** (1/3)`` from :data:`TOPK_NESTED_RATIO` on; ``()`` (plain
    ``torch.topk``) off the CPU, where ``torch.topk`` is a radix select, or when rows are too short to gain."""
    if torch.device(device).type != "cpu":
        return ()
    blocks = []
    for level in range(2 if width / max(1, k) >= TOPK_NESTED_RATIO else 1, 0, -1):
        block = round((width / max(1, k)) ** (1 / (level + 1)))  # the blocks' heads of this level are the next's row
        if block < 2 or width // block < k:
            break
        blocks.append(block)
        width //= block
    return tuple(blocks)


def blocked_topk(scores: torch.Tensor, k: int, largest: bool, blocks: tuple[int, ...] | list[int],
                 ordered: bool = True) -> torch.Tensor:
    """``torch.topk(scores, k, dim=1, largest=largest, sorted=ordered).indices`` (the same items up to ties; in
    the same order up to ties with ``ordered``, else in no particular order) for a ``[rows, width]`` matrix whose
    rows are contiguous, in smaller ``torch.topk`` calls (``blocks`` from :func:`topk_blocks`).

    With ``block = blocks[0]`` and ``heads = width // block``, column ``j < heads`` heads the strided block ``{j,
    j + heads, ..., j + (block - 1) heads}``; the last ``width % block`` columns are in no block. The ``k`` blocks with
    the highest maxima (lowest minima) and those last columns hold a row's ``k`` highest (lowest) scores: any other
    score is at most the ``k``-th highest block maximum, which ``k`` scores of the chosen blocks reach. On the CPU
    ``torch.topk`` costs more per score read than the product per score written; this reads the row once for the
    block extremes (a vectorised reduction over contiguous slices), picks the ``k`` blocks among the ``heads``
    extremes (by ``torch.topk``, or again by blocks with ``blocks[1:]``), then runs ``torch.topk`` over their ``k *
    block`` candidates. ``blocks`` empty: plain ``torch.topk``.
    """
    if not blocks:
        return torch.topk(scores, k, dim=1, largest=largest, sorted=ordered).indices
    block = blocks[0]
    rows, width = scores.shape
    heads = width // block
    body = scores[:, : heads * block].view(rows, block, heads)
    extremes = body.amax(1) if largest else body.amin(1)
    chosen = blocked_topk(extremes, k, largest, blocks[1:], ordered=False)  # [rows, k] block heads
    candidates = body.gather(2, chosen.unsqueeze(1).expand(rows, block, k)).reshape(rows, block * k)
    if heads * block < width:
        candidates = torch.cat([candidates, scores[:, heads * block :]], dim=1)
    at = torch.topk(candidates, k, dim=1, largest=largest, sorted=ordered).indices  # slice * k + slot, or the tail
    in_blocks = torch.div(at, k, rounding_mode="floor") * heads + chosen.gather(1, at % k)
    return torch.where(at < block * k, in_blocks, at + (heads * block - block * k))


@dataclass
class ExclusionRows:
    """An exclusion matrix as :func:`build_pool` reads it: CSR row pointers on the host and on the
    device, column indices on the device (duplicates merged). :class:`DNSPool` keeps one per shard so
    that a refresh does not convert the matrix again."""

    shape: tuple[int, int]
    host_indptr: np.ndarray
    indptr: torch.Tensor
    indices: torch.Tensor

    @classmethod
    def from_csr(cls, exclude: sp.spmatrix, device: torch.device | str = "cpu") -> "ExclusionRows":
        exclude = sp.csr_matrix(exclude, dtype=np.float32)
        exclude.sum_duplicates()
        exclude.eliminate_zeros()
        indptr = exclude.indptr.astype(np.int64)
        indices = torch.as_tensor(exclude.indices.astype(np.int64), device=device)
        return cls(tuple(exclude.shape), indptr, torch.as_tensor(indptr, device=device), indices)


@torch.no_grad()
def build_pool(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: sp.csr_matrix | ExclusionRows,
    k: int,
    sampler: str = "dissimilar",
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    skip: int = 0,
) -> torch.LongTensor:
    """Retrieve ``k`` candidate negatives per user (Eq. 4 of the paper).

    Args:
        user_emb: ``[n_users, d]`` user embedding table.
        item_emb: ``[n_items, d]`` item embedding table (same device).
        exclude: ``[n_users, n_items]`` sparse matrix; a non-zero entry means the item may not be
            in the user's pool (training positives and RecBole's padding item 0); or the same as
            :class:`ExclusionRows`.
        k: pool size per user.
        sampler: ``"dissimilar"`` - the k allowed items with the LOWEST cosine similarity (DNS);
            ``"similar"`` - the k highest (hard negatives, ANCE-style);
            ``"random"`` - k distinct allowed items drawn uniformly (torch's RNG).
        chunk_size: users scored at once; ``None`` picks it from the ``dns_refresh_mb`` default and the device
            (:func:`chunk_size_for`).
        dtype: precision of the scores: ``torch.float32``, or ``torch.float16`` / ``torch.bfloat16``
            (faster on a GPU; near-ties may then order differently, see docs/configuration.md).
        generator: the ``random`` sampler's torch generator (default: torch's global RNG).
        skip: a rank band: leave out the ``skip`` first items of the sampler's order and keep the next
            ``k`` (a user with fewer than ``skip + k`` allowed items keeps the last ``k`` of its order).

    Returns:
        ``LongTensor [n_users, k]`` of item ids on the embeddings' device. A user with fewer than
        ``k`` allowed items gets its allowed items repeated (one warning says how many users). Rows are in the
        sampler's order with ``skip > 0`` or when a user is short of ``k`` allowed items; otherwise a row is a set in
        no particular order (the draws from it are uniform), which spares the top-k its sort.

    Raises:
        ValueError: bad arguments, or a user with no allowed item at all.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 0:
        raise ValueError(f"skip must be an integer >= 0; got {skip!r}")
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"user_emb and item_emb must be 2-D with the same width; got {tuple(user_emb.shape)} "
            f"and {tuple(item_emb.shape)}"
        )
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    if tuple(exclude.shape) != (n_users, n_items):
        raise ValueError(f"exclude must have shape {(n_users, n_items)}; got {tuple(exclude.shape)}")
    k = int(k)
    device = user_emb.device
    index = exclude if isinstance(exclude, ExclusionRows) else ExclusionRows.from_csr(exclude, device)
    host_indptr, indptr, indices = index.host_indptr, index.indptr.to(device), index.indices.to(device)
    allowed = n_items - (indptr[1:] - indptr[:-1])
    if bool((allowed == 0).any()):
        bad = torch.nonzero(allowed == 0).flatten()
        raise ValueError(
            f"{bad.numel()} user(s) have no item left to sample (every item is excluded), "
            f"e.g. user ids {bad[:5].tolist()}"
        )
    short = int((allowed < k).sum())
    if short:
        warnings.warn(
            f"build_pool: {short} of {n_users} users have fewer than k={k} allowed items; "
            "their allowed items are repeated to fill the pool",
            RuntimeWarning,
            stacklevel=2,
        )
    if chunk_size is None:
        chunk_size = chunk_size_for(n_items, default("dns_refresh_mb"), user_emb.device)
    chunk_size = max(1, int(chunk_size))

    if dtype not in REFRESH_DTYPES.values():
        raise ValueError(f"dtype must be one of {', '.join(map(str, REFRESH_DTYPES.values()))}; got {dtype!r}")
    if sampler != "random":
        user_n = F.normalize(user_emb.float(), dim=1).to(dtype)
        item_n_t = F.normalize(item_emb.float(), dim=1).to(dtype).t()  # a view: BLAS reads it transposed
    largest = sampler == "similar"
    fill = -math.inf if largest else math.inf
    skip = int(skip)
    kk = min(k + skip, n_items)
    blocks = topk_blocks(n_items, kk, device)
    # a row's order matters for a band (ranks skip..skip+k-1) and for a user short of allowed items (allowed ones
    # first); otherwise the pool is a set, and an unordered top-k is cheaper
    ordered = skip > 0 or short > 0
    cols = torch.arange(k, device=device)
    pool = torch.empty((n_users, k), dtype=torch.long, device=device)
    # one score buffer for every chunk: a fresh chunk-sized allocation per chunk costs page faults
    buffer = torch.empty((min(chunk_size, n_users), n_items), dtype=torch.float32 if sampler == "random" else dtype,
                         device=device)
    for start in range(0, n_users, chunk_size):
        end = min(start + chunk_size, n_users)
        scores = buffer[: end - start]
        if sampler == "random":
            # random keys + top-k = k distinct items uniformly at random among the allowed ones
            torch.rand(scores.shape, generator=generator, out=scores)
        else:
            cpu_mm(user_n[start:end], item_n_t, out=scores)
        lo, hi = int(host_indptr[start]), int(host_indptr[end])  # no device sync per chunk
        if hi > lo:
            counts = indptr[start + 1 : end + 1] - indptr[start:end]
            rows = torch.repeat_interleave(torch.arange(end - start, device=device), counts)
            scores[rows, indices[lo:hi]] = fill
        top = blocked_topk(scores, kk, largest, blocks, ordered)
        # allowed items come first (excluded ones score +-inf): take ranks first..first+k-1 of them, where
        # first = skip, or less for a user with fewer than skip + k allowed items; cycle when short of k
        n_allowed = allowed[start:end].unsqueeze(1)
        first = torch.clamp(n_allowed - k, min=0, max=skip)
        pool[start:end] = top.gather(1, first + cols.unsqueeze(0) % torch.clamp(n_allowed, max=k))
    return pool


def sample_distinct(
    exclude: sp.csr_matrix, k: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.LongTensor:
    """``[n_users, k]``: ``k`` distinct items per user, uniformly among the items ``exclude`` allows
    (:func:`build_pool`'s ``random`` sampler, without embeddings)."""
    n_users, n_items = exclude.shape
    empty_users = torch.empty((n_users, 0), device=device)
    return build_pool(empty_users, torch.empty((n_items, 0), device=device), exclude, k, "random", generator=generator)
