"""The Dynamic Negative Sampling mechanism, model-agnostic.

Everything DNS adds to a recommender lives here (Section 3.3 of the paper):

* :func:`build_pool` - Eq. 4: for every user, the ``k`` allowed items with the lowest cosine
  similarity (or the highest, or ``k`` random ones, for the paper's RQ1 samplers);
* :func:`dns_loss` - Eq. 5: ``-log f(u,i+) / (f(u,i-) + f(u,i'-) + f(u,i+))``, ``f = exp(cos/tau)``;
* :class:`DNSPool` - the pool, its schedule (refresh at epochs 0, n, 2n, ...), the per-instance draw
  of the contrastive negative ``i'-`` and its checkpoint state;
* :class:`DNSModel` - the mixin a ``_DNS`` model variant puts first among its bases. The model owns its
  pool (built from the training dataset in ``__init__``, saved in ``other_parameter()``), rebuilds it in
  :meth:`DNSModel.on_epoch_start` (which the trainer calls before every epoch) and draws ``i'-`` in its
  own ``calculate_loss``. A variant says only how to get its embedding tables and its own extra losses.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_dns.distributed import all_gather_rows, rank_and_world, shard_bounds, shared_seed
from recbole_dns.errors import ConfigError
from recbole_dns.sampling import exclusion_matrix

SAMPLERS = ("dissimilar", "similar", "random")

#: Default bound on the extra memory one refresh may use, in MiB (the ``chunk x n_items`` scores).
DEFAULT_REFRESH_MB = 256.0

#: ``dns_refresh_dtype`` -> the precision the refresh scores in.
REFRESH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def chunk_size_for(n_items: int, memory_mb: float, device: torch.device | str | None = None) -> int:
    """Users per chunk so that a chunk's score matrix and top-k work fit in ``memory_mb`` MiB.

    A chunk holds ``chunk x n_items`` scores (float32; one buffer reused for every chunk) plus,
    transiently, about as much again for ``torch.topk``'s work buffers; we budget 8 bytes per score.
    The largest chunk is also the fastest, on the CPU as on a GPU (``device`` is kept for callers).
    """
    n_items = max(1, n_items)
    return max(1, int(memory_mb * 2**20) // (8 * n_items))


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
        chunk_size: users scored at once; ``None`` picks it from a 256 MiB bound (:func:`chunk_size_for`).
        dtype: precision of the scores: ``torch.float32``, or ``torch.float16`` / ``torch.bfloat16``
            (faster on a GPU; near-ties may then order differently, see the README).
        generator: the ``random`` sampler's torch generator (default: torch's global RNG).
        skip: a rank band: leave out the ``skip`` first items of the sampler's order and keep the next
            ``k`` (a user with fewer than ``skip + k`` allowed items keeps the last ``k`` of its order).

    Returns:
        ``LongTensor [n_users, k]`` of item ids on the embeddings' device. A user with fewer than
        ``k`` allowed items gets its allowed items repeated (one warning says how many users).

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
        chunk_size = chunk_size_for(n_items, DEFAULT_REFRESH_MB, device)
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
            torch.mm(user_n[start:end], item_n_t, out=scores)
        lo, hi = int(host_indptr[start]), int(host_indptr[end])  # no device sync per chunk
        if hi > lo:
            counts = indptr[start + 1 : end + 1] - indptr[start:end]
            rows = torch.repeat_interleave(torch.arange(end - start, device=device), counts)
            scores[rows, indices[lo:hi]] = fill
        top = torch.topk(scores, kk, dim=1, largest=largest, sorted=True).indices
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


def dns_loss(
    user_e: torch.Tensor,
    pos_e: torch.Tensor,
    neg_e: torch.Tensor,
    dns_neg_e: torch.Tensor,
    tau: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Batch mean (or sum) of Eq. 5: ``-log f(u,i+) / (f(u,i-) + f(u,i'-) + f(u,i+))``, ``f = exp(cos/tau)``.

    ``user_e``/``pos_e`` are ``[B, d]``; ``neg_e`` and ``dns_neg_e`` are ``[B, d]`` or ``[B, m, d]``
    (several negatives per instance). Computed with ``logsumexp``: finite for small ``tau`` and for
    zero vectors (whose cosine is taken as 0).
    """
    candidates = torch.cat([_as_rows(pos_e), _as_rows(neg_e), _as_rows(dns_neg_e)], dim=0)  # [K, B, d]
    return stacked_dns_loss(user_e, candidates, tau, reduction)


_COS_EPS = 1e-8


def _as_rows(e: torch.Tensor) -> torch.Tensor:
    """``[B, d] -> [1, B, d]``; ``[B, m, d] -> [m, B, d]``."""
    return e.unsqueeze(0) if e.dim() == 2 else e.transpose(0, 1)


def cosine(user_e: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[K, B]`` cosine of each user ``[B, d]`` with its ``K`` candidate items ``[K, B, d]``.

    Dot products times the inverse norms (clamped at 1e-8, so a zero vector has cosine 0): on the
    backward pass this is cheaper than normalising the rows first, and on the CPU an elementwise
    product and sum beats ``bmm`` for these shapes.
    """
    dot = (candidates * user_e).sum(-1)
    user_inv = (user_e * user_e).sum(-1).clamp_min(_COS_EPS**2).rsqrt()
    cand_inv = (candidates * candidates).sum(-1).clamp_min(_COS_EPS**2).rsqrt()
    return dot * user_inv * cand_inv


SIMILARITIES = ("cosine", "dot")
PREDICTIONS = ("model", "cosine")


def dns_logits(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str = "cosine") -> torch.Tensor:
    """``[K, B]`` similarity / tau of each user ``[B, d]`` with its candidates ``[K, B, d]``."""
    if similarity == "cosine":
        return cosine(user_e, candidates) / tau
    if similarity == "dot":
        return (candidates * user_e).sum(-1) / tau
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {similarity!r}")


def loss_from_logits(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-log softmax`` of row 0 of ``[K, B]`` logits (the positive first), reduced over the batch."""
    losses = torch.logsumexp(logits, dim=0) - logits[0]
    return losses.mean() if reduction == "mean" else losses.sum()


def stacked_dns_loss(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, reduction: str = "mean",
                     similarity: str = "cosine") -> torch.Tensor:
    """:func:`dns_loss` with the items stacked as ``[K, B, d]``, the positive first."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum; got {reduction!r}")
    return loss_from_logits(dns_logits(user_e, candidates, tau, similarity), reduction)


#: how ``i'-`` is drawn from the pool: per batch with replacement (``batch``), or fixed per training
#: instance until the next refresh, without repeats within a user while it has at most k instances (``instance``)
DRAWS = ("batch", "instance")


class DNSPool:
    """The per-user pool of contrastive negatives, its refresh schedule and its checkpoint state.

    The pool is (re)built at the start of epochs ``start``, ``start + n``, ``start + 2n``, ... (``start`` is
    ``dns_warmup``, 0 by default; the previous pool is dropped). :meth:`sample` gives every training
    instance ``m`` items of its user's pool row: uniformly at random per batch (``draw="batch"``), or the
    items assigned to the instance at the last refresh (``draw="instance"``, the paper's Section 3.3: a
    user with ``m`` training instances gets ``m`` distinct pool items while ``m <= k``).

    In a distributed run (a ``torch.distributed`` process group of ``N`` ranks), every rank builds the
    rows of its ``1/N`` of the users (:meth:`build_shard`) and the shards are all-gathered: every rank
    holds the same pool, equal to a one-process build from the same tables for ``dissimilar`` and
    ``similar``; ``random`` draws each shard from one seed shared by the ranks, offset by the rank.
    """

    def __init__(
        self,
        exclude: sp.csr_matrix,
        n: int,
        k: int,
        sampler: str = "dissimilar",
        memory_mb: float = DEFAULT_REFRESH_MB,
        dtype: str = "float32",
        skip: int = 0,
        start: int = 0,
        draw: str = "batch",
    ) -> None:
        if draw not in DRAWS:
            raise ValueError(f"draw must be one of {', '.join(DRAWS)}; got {draw!r}")
        self.exclude = sp.csr_matrix(exclude)
        self.exclude.sort_indices()
        self.n, self.k, self.sampler = int(n), int(k), sampler
        self.memory_mb = float(memory_mb)
        self.dtype = REFRESH_DTYPES[dtype]
        self._rows: ExclusionRows | None = None  # the exclusion rows of this process's shard, on its device
        self._rows_key: tuple | None = None
        self.skip, self.start, self.draw = int(skip), int(start), draw
        self.pool: torch.Tensor | None = None
        self.perm: torch.Tensor | None = None  # draw="instance": each user's order of its pool row
        self.built_at: int = -1
        self.refreshes: int = 0
        # draw="instance": (user, item) keys of the training pairs and the CSR row starts, on the device in use
        self._keys: torch.Tensor | None = None
        self._indptr: torch.Tensor | None = None

    @classmethod
    def from_dataset(cls, dataset: Any, config: Any) -> "DNSPool":
        """Pool over a RecBole training dataset: training positives and padding item 0 are excluded.

        Raises:
            ConfigError: ``dns_k`` (plus ``dns_skip``) is larger than the catalogue (padding item 0 not counted).
        """
        n_items = dataset.item_num - 1
        if config["dns_k"] > n_items:
            raise ConfigError(
                f"config key 'dns_k' must be between 1 and the number of items of dataset "
                f"'{config['dataset']}' ({n_items}); got {config['dns_k']}"
            )
        if config["dns_k"] + config["dns_skip"] > n_items:
            raise ConfigError(
                f"config keys 'dns_skip' + 'dns_k' must be at most the number of items of dataset "
                f"'{config['dataset']}' ({n_items}); got {config['dns_skip']} + {config['dns_k']}"
            )
        return cls(exclusion_matrix(dataset), config["dns_n"], config["dns_k"], config["dns_sampler"],
                   config["dns_refresh_mb"], config["dns_refresh_dtype"], skip=config["dns_skip"],
                   start=config["dns_warmup"], draw=config["dns_draw"])

    @property
    def n_users(self) -> int:
        return self.exclude.shape[0]

    def due(self, epoch: int) -> bool:
        """Whether the pool must be (re)built at the start of ``epoch``."""
        if epoch < self.start:
            return False
        return self.pool is None or ((epoch - self.start) % self.n == 0 and self.built_at != epoch)

    @torch.no_grad()
    def build_shard(
        self,
        user_emb: torch.Tensor,
        item_emb: torch.Tensor,
        rank: int = 0,
        world_size: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """The pool rows of the users ``rank`` owns among ``world_size`` ranks
        (:func:`~recbole_dns.distributed.shard_bounds`): :func:`build_pool` on those users' embeddings
        and exclusion rows, chunked to ``memory_mb``."""
        start, end = shard_bounds(self.n_users, world_size, rank)
        chunk = chunk_size_for(item_emb.shape[0], self.memory_mb, item_emb.device)
        key = (str(item_emb.device), start, end)
        if self._rows_key != key:  # converted once per shard and device, not at every refresh
            self._rows, self._rows_key = None, None
            self._rows, self._rows_key = ExclusionRows.from_csr(self.exclude[start:end], item_emb.device), key
        return build_pool(
            user_emb.detach()[start:end], item_emb.detach(), self._rows, self.k, self.sampler, chunk, self.dtype,
            generator, self.skip,
        )

    @torch.no_grad()
    def refresh(self, user_emb: torch.Tensor, item_emb: torch.Tensor, epoch: int) -> None:
        """Rebuild the pool from the given tables; in a distributed run every rank builds its shard and
        the shards are all-gathered (every rank must call it, with the same tables)."""
        self.pool = self.perm = None  # drop the old pool before building the new one
        rank, world = rank_and_world()
        generator = None
        if self.sampler == "random" and world > 1:
            generator = torch.Generator(item_emb.device)
            generator.manual_seed(shared_seed(item_emb.device) + rank)
        shard = self.build_shard(user_emb, item_emb, rank, world, generator)
        self.pool = all_gather_rows(shard, self.n_users)
        if self.draw == "instance":  # per-instance randomness: each rank's own RNG
            self.perm = torch.argsort(torch.rand(self.pool.shape, device=self.pool.device), dim=1)
        self.built_at = epoch
        self.refreshes += 1

    def instance_index(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Each training instance's rank among its user's training items (0, 1, ...)."""
        device = users.device
        if self._keys is None or self._keys.device != device:
            coo = self.exclude.tocoo()  # sorted by user, then item (CSR with sorted indices)
            self._keys = torch.as_tensor(coo.row.astype(np.int64) * self.exclude.shape[1] + coo.col, device=device)
            self._indptr = torch.as_tensor(self.exclude.indptr.astype(np.int64), device=device)
        pos = torch.searchsorted(self._keys, users * self.exclude.shape[1] + items)
        return pos - self._indptr[users] - 1  # item 0 (padding) is every user's first excluded item

    def sample(self, users: torch.Tensor, m: int = 1, items: torch.Tensor | None = None) -> torch.Tensor:
        """``m`` contrastive negatives per instance (``[B]`` for ``m = 1``, else ``[B, m]``), from the users'
        pool rows; ``items`` (the instances' positives) are needed for ``draw="instance"``."""
        if self.pool is None:
            raise RuntimeError(
                "the DNS pool has not been built yet: call model.on_epoch_start(epoch) before training "
                "(recbole_dns's trainer does it at the start of every epoch)"
            )
        users = users.to(self.pool.device)
        if self.draw == "instance":
            if items is None:
                raise ValueError("draw='instance' needs the instances' positive items")
            j = self.instance_index(users, items.to(self.pool.device))
            slots = (j.unsqueeze(1) * m + torch.arange(m, device=users.device)) % self.k
            cols = self.perm[users.unsqueeze(1), slots]
        else:
            cols = torch.randint(self.k, (users.shape[0], m), device=self.pool.device)
        out = self.pool[users.unsqueeze(1), cols]
        return out.squeeze(1) if m == 1 else out

    def state_dict(self) -> dict:
        return {"pool": self.pool, "perm": self.perm, "built_at": self.built_at, "refreshes": self.refreshes}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        pool = state.get("pool")
        if pool is not None and tuple(pool.shape) != (self.n_users, self.k):
            raise ValueError(
                f"checkpoint DNS pool has shape {tuple(pool.shape)}, expected "
                f"{(self.n_users, self.k)} (was dns_k or the dataset changed?)"
            )

        def to(t):
            return t.to(device) if (t is not None and device is not None) else t

        self.pool, self.perm = to(pool), to(state.get("perm"))
        self.built_at = int(state.get("built_at", -1))
        self.refreshes = int(state.get("refreshes", 0))


@dataclass
class DNSBatch:
    """A training batch as the DNS loss saw it: the item ids and the embeddings the loss used.

    ``dns_neg_items`` is ``[B]`` (``[B, m]`` with ``dns_negs: m > 1``, then ``dns_neg_e`` is ``[B, m, d]``);
    ``neg_items`` is the static negative ``i-`` (in the loss unless ``dns_keep_static: false``).
    ``logits`` (``[K, B]``, no gradient) are the loss's similarities / tau, the positive first, then the
    static negative when kept, then the contrastive ones.
    """

    interaction: Any
    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    dns_neg_items: torch.Tensor
    user_e: torch.Tensor
    pos_e: torch.Tensor
    neg_e: torch.Tensor
    dns_neg_e: torch.Tensor
    logits: torch.Tensor | None = None
    keep_static: bool = True
    l2_dns_neg: bool = True

    def item_ids(self) -> list[torch.Tensor]:
        """The item columns a variant's L2 term covers: positive, static negative (if in the loss),
        contrastive negatives (unless ``dns_l2_dns_neg: false``)."""
        return [self.pos_items] + ([self.neg_items] if self.keep_static else []) + (
            [self.dns_neg_items] if self.l2_dns_neg else [])

    def item_embeddings(self) -> list[torch.Tensor]:
        """The embeddings of :meth:`item_ids`, as the loss used them."""
        return [self.pos_e] + ([self.neg_e] if self.keep_static else []) + ([self.dns_neg_e] if self.l2_dns_neg else [])


class DNSModel:
    """Mixin that turns a RecBole model into its DNS variant; put it first among the bases.

    ``class BPR_DNS(DNSModel, BPR)``: the base model's ``__init__`` runs first, then this one reads the
    ``dns_*`` keys and builds the model's :class:`DNSPool` from the training dataset. A variant provides

    * :meth:`train_tables` - ``(users [n_users, d], items [n_items, d])``, the tables the loss is
      computed on (with gradient; e.g. ``self.forward()`` for a graph model);
    * :meth:`dns_tables` - the tables the pool is built from (default: :meth:`train_tables`, called
      under ``no_grad`` once per refresh);
    * :meth:`extra_losses` - the model's own terms (L2, self-supervised losses), from a :class:`DNSBatch`.

    ``calculate_loss`` returns ``(dns_loss, *extra_losses)`` (during ``dns_warmup`` epochs, the base
    model's own loss); ``predict`` and ``full_sort_predict`` stay the base model's unless
    ``dns_predict: cosine``. The pool travels in checkpoints through ``other_parameter()``; the
    ``state_dict`` is the base model's, so a variant's weights load into its base.

    Options beyond the paper (all off by default, see the README): ``dns_negs`` contrastive negatives per
    instance, ``dns_candidates`` (score that many pool items per instance and keep the hardest),
    ``dns_similarity: dot``, ``dns_keep_static: false``, ``dns_l2_dns_neg: false``, ``dns_warmup``,
    ``dns_skip`` (a rank band), ``dns_draw: instance``, ``dns_predict: cosine``.
    """

    dns_tau: float
    dns_pool: DNSPool
    #: how the DNS loss is reduced over the batch: as the base model reduces the loss it replaces
    dns_reduction: str = "mean"
    #: names of ``calculate_loss``'s terms (error messages); a variant names its extra losses after "dns"
    loss_terms: tuple[str, ...] = ("dns",)

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.dns_tau = float(config["dns_tau"])
        self.dns_negs = int(config["dns_negs"])
        self.dns_candidates = int(config["dns_candidates"])
        self.dns_similarity = str(config["dns_similarity"])
        self.dns_keep_static = bool(config["dns_keep_static"])
        self.dns_l2_dns_neg = bool(config["dns_l2_dns_neg"])
        self.dns_predict = str(config["dns_predict"])
        self.dns_pool = DNSPool.from_dataset(dataset, config)
        self.dns_epoch = 0
        self._cosine_tables: tuple[torch.Tensor, torch.Tensor] | None = None
        #: callables given every :class:`DNSBatch` after its loss is computed (diagnostics)
        self.dns_observers: list = []

    # ---- what a variant provides ---------------------------------------------------------------
    def train_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must say how to get its tables: define train_tables()")

    def dns_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_tables()

    def extra_losses(self, batch: DNSBatch) -> tuple[torch.Tensor, ...]:
        return ()

    # ---- the mechanism -------------------------------------------------------------------------
    @property
    def dns_active(self) -> bool:
        """False during the ``dns_warmup`` epochs, which train with the base model's own loss."""
        return self.dns_epoch >= self.dns_pool.start

    def on_epoch_start(self, epoch: int) -> bool:
        """Rebuild the pool if ``epoch`` is a refresh epoch (``dns_warmup + j * dns_n``); returns whether it did."""
        self.dns_epoch = epoch
        if not self.dns_pool.due(epoch):
            return False
        with torch.no_grad():
            users, items = self.dns_tables()
        self.dns_pool.refresh(users, items, epoch)
        return True

    def reset_eval_cache(self) -> None:
        """Drop the cached full-sort tables (RecBole's ``restore_user_e``/``restore_item_e``, and the
        normalised tables of ``dns_predict: cosine``) once training goes on."""
        if getattr(self, "restore_user_e", None) is not None or getattr(self, "restore_item_e", None) is not None:
            self.restore_user_e = self.restore_item_e = None
        self._cosine_tables = None

    @torch.no_grad()
    def _hardest(self, users: torch.Tensor, candidates: torch.Tensor, user_table: torch.Tensor,
                 item_table: torch.Tensor) -> torch.Tensor:
        """Of each instance's candidates ``[B, M]``, the ``dns_negs`` scored highest by the loss's similarity."""
        user_e = F.embedding(users, user_table)
        scores = dns_logits(user_e, F.embedding(candidates, item_table).transpose(0, 1), 1.0, self.dns_similarity)
        top = torch.topk(scores, self.dns_negs, dim=0).indices  # [m, B]
        return candidates.gather(1, top.t())

    def dns_negatives(self, interaction: Any, user_table: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """``[B, m]``: the batch's contrastive negatives, from the pool (the hardest of ``dns_candidates``
        pool items per instance when that is set)."""
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if self.dns_candidates:
            drawn = self.dns_pool.sample(users, max(self.dns_candidates, self.dns_negs), items)
            return self._hardest(users, drawn.view(len(users), -1), user_table, item_table)
        return self.dns_pool.sample(users, self.dns_negs, items).view(len(users), -1)

    def calculate_loss(self, interaction: Any) -> tuple[torch.Tensor, ...]:
        if not self.dns_active:
            return super().calculate_loss(interaction)
        self.reset_eval_cache()
        users = interaction[self.USER_ID]
        user_table, item_table = self.train_tables()
        dns_neg = self.dns_negatives(interaction, user_table, item_table)  # [B, m]
        static = [interaction[self.NEG_ITEM_ID]] if self.dns_keep_static else []
        # one lookup for all item columns (F.embedding's backward is much faster on the CPU than tensor
        # indexing), kept stacked as [K, B, d] for the loss: positive, static negative, contrastive ones
        item_ids = torch.cat([torch.stack([interaction[self.ITEM_ID], *static]), dns_neg.t()])
        user_e = F.embedding(users, user_table)
        candidates = F.embedding(item_ids, item_table)
        logits = dns_logits(user_e, candidates, self.dns_tau, self.dns_similarity)
        main = loss_from_logits(logits, self.dns_reduction)
        s = len(static)
        dns_e = candidates[1 + s:].transpose(0, 1)  # [B, m, d]
        single = self.dns_negs == 1
        neg_ids = interaction[self.NEG_ITEM_ID]
        batch = DNSBatch(
            interaction, users, item_ids[0], neg_ids, dns_neg[:, 0] if single else dns_neg,
            user_e, candidates[0], candidates[1] if s else F.embedding(neg_ids, item_table).detach(),
            dns_e[:, 0] if single else dns_e, logits.detach(), self.dns_keep_static, self.dns_l2_dns_neg,
        )
        for observe in self.dns_observers:
            observe(batch)
        return (main, *self.extra_losses(batch))

    # ---- prediction: the base model's, or the loss's cosine ----------------------------------------
    def _cosine(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cosine_tables is None:
            users, items = self.train_tables()
            self._cosine_tables = F.normalize(users.detach(), dim=1), F.normalize(items.detach(), dim=1)
        return self._cosine_tables

    def predict(self, interaction: Any) -> torch.Tensor:
        if self.dns_predict == "model":
            return super().predict(interaction)
        users, items = self._cosine()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        if self.dns_predict == "model":
            return super().full_sort_predict(interaction)
        users, items = self._cosine()
        return (users[interaction[self.USER_ID]] @ items.t()).view(-1)

    def other_parameter(self) -> dict:
        return {**super().other_parameter(), "dns_pool": self.dns_pool.state_dict()}

    def load_other_parameter(self, para: dict | None) -> None:
        if para is None:
            return
        para = dict(para)
        state = para.pop("dns_pool", None)
        super().load_other_parameter(para)
        if state is not None:
            self.dns_pool.load_state_dict(state, self.device)
