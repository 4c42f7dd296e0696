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

from recbole_dns.errors import ConfigError
from recbole_dns.sampling import exclusion_matrix

SAMPLERS = ("dissimilar", "similar", "random")

#: Default bound on the extra memory one refresh may use, in MiB (the ``chunk x n_items`` scores).
DEFAULT_REFRESH_MB = 256.0


#: On the CPU a chunk's scores should stay in the last-level cache while top-k reads them: past it the
#: refresh slows down by ~40% (measured on a 33 MiB L3). 16 MiB of float32 scores per chunk.
CPU_CHUNK_BYTES = 16 * 2**20


def chunk_size_for(n_items: int, memory_mb: float, device: torch.device | str | None = None) -> int:
    """Users per chunk so that a chunk's score matrix and top-k work fit in ``memory_mb`` MiB.

    A chunk holds ``chunk x n_items`` float32 scores plus, transiently, about as much again for
    ``torch.topk``'s work buffers; we budget 8 bytes per score. On the CPU the chunk is also kept
    cache-sized (:data:`CPU_CHUNK_BYTES`), which is faster.
    """
    n_items = max(1, n_items)
    chunk = int(memory_mb * 2**20) // (8 * n_items)
    if device is None or torch.device(device).type == "cpu":
        chunk = min(chunk, CPU_CHUNK_BYTES // (4 * n_items))
    return max(1, chunk)


def _csr_to_torch(exclude: sp.csr_matrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    exclude = sp.csr_matrix(exclude, dtype=np.float32)
    exclude.sum_duplicates()
    exclude.eliminate_zeros()
    indptr = torch.as_tensor(exclude.indptr.astype(np.int64), device=device)
    indices = torch.as_tensor(exclude.indices.astype(np.int64), device=device)
    return indptr, indices


@torch.no_grad()
def build_pool(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: sp.csr_matrix,
    k: int,
    sampler: str = "dissimilar",
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Retrieve ``k`` candidate negatives per user (Eq. 4 of the paper).

    Args:
        user_emb: ``[n_users, d]`` user embedding table.
        item_emb: ``[n_items, d]`` item embedding table (same device).
        exclude: ``[n_users, n_items]`` sparse matrix; a non-zero entry means the item may not be
            in the user's pool (training positives and RecBole's padding item 0).
        k: pool size per user.
        sampler: ``"dissimilar"`` - the k allowed items with the LOWEST cosine similarity (DNS);
            ``"similar"`` - the k highest (hard negatives, ANCE-style);
            ``"random"`` - k distinct allowed items drawn uniformly (torch's RNG).
        chunk_size: users scored at once; ``None`` picks it from a 256 MiB bound (cache-sized on the CPU).
        generator: torch generator for the ``random`` sampler (default: torch's global RNG).

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
    indptr, indices = _csr_to_torch(exclude, device)
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

    if sampler != "random":
        user_n = F.normalize(user_emb.float(), dim=1)
        item_n_t = F.normalize(item_emb.float(), dim=1).t().contiguous()
    largest = sampler == "similar"
    fill = -math.inf if largest else math.inf
    kk = min(k, n_items)
    cols = torch.arange(k, device=device)
    pool = torch.empty((n_users, k), dtype=torch.long, device=device)
    for start in range(0, n_users, chunk_size):
        end = min(start + chunk_size, n_users)
        if sampler == "random":
            # random keys + top-k = k distinct items uniformly at random among the allowed ones
            scores = torch.rand((end - start, n_items), device=device, generator=generator)
        else:
            scores = user_n[start:end] @ item_n_t
        lo, hi = int(indptr[start]), int(indptr[end])
        if hi > lo:
            counts = indptr[start + 1 : end + 1] - indptr[start:end]
            rows = torch.repeat_interleave(torch.arange(end - start, device=device), counts)
            scores[rows, indices[lo:hi]] = fill
        top = torch.topk(scores, kk, dim=1, largest=largest, sorted=True).indices
        # allowed items come first (excluded ones score +-inf); cycle through them when short
        wrap = torch.clamp(allowed[start:end], max=k).unsqueeze(1)
        pool[start:end] = top.gather(1, cols.unsqueeze(0) % wrap)
        del scores, top
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


def stacked_dns_loss(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, reduction: str = "mean") -> torch.Tensor:
    """:func:`dns_loss` with the items stacked as ``[K, B, d]``, the positive first."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum; got {reduction!r}")
    logits = cosine(user_e, candidates) / tau
    losses = torch.logsumexp(logits, dim=0) - logits[0]
    return losses.mean() if reduction == "mean" else losses.sum()


class DNSPool:
    """The per-user pool of contrastive negatives, its refresh schedule and its checkpoint state.

    The pool is (re)built at the start of epoch 0 and of every epoch ``e`` with ``e % n == 0`` (the
    previous pool is dropped). :meth:`sample` gives every training instance one item drawn uniformly
    from its user's pool row.
    """

    def __init__(
        self,
        exclude: sp.csr_matrix,
        n: int,
        k: int,
        sampler: str = "dissimilar",
        memory_mb: float = DEFAULT_REFRESH_MB,
    ) -> None:
        self.exclude = sp.csr_matrix(exclude)
        self.n, self.k, self.sampler = int(n), int(k), sampler
        self.memory_mb = float(memory_mb)
        self.pool: torch.Tensor | None = None
        self.built_at: int = -1
        self.refreshes: int = 0

    @classmethod
    def from_dataset(cls, dataset: Any, config: Any) -> "DNSPool":
        """Pool over a RecBole training dataset: training positives and padding item 0 are excluded.

        Raises:
            ConfigError: ``dns_k`` is larger than the catalogue (RecBole's padding item 0 not counted).
        """
        n_items = dataset.item_num - 1
        if config["dns_k"] > n_items:
            raise ConfigError(
                f"config key 'dns_k' must be between 1 and the number of items of dataset "
                f"'{config['dataset']}' ({n_items}); got {config['dns_k']}"
            )
        exclude = exclusion_matrix(dataset)
        return cls(exclude, config["dns_n"], config["dns_k"], config["dns_sampler"], config["dns_refresh_mb"])

    @property
    def n_users(self) -> int:
        return self.exclude.shape[0]

    def due(self, epoch: int) -> bool:
        """Whether the pool must be (re)built at the start of ``epoch``."""
        return self.pool is None or (epoch % self.n == 0 and self.built_at != epoch)

    @torch.no_grad()
    def refresh(self, user_emb: torch.Tensor, item_emb: torch.Tensor, epoch: int) -> None:
        """Rebuild the pool from the given tables (:func:`build_pool`, chunked to ``memory_mb``)."""
        self.pool = None  # drop the old pool before building the new one
        chunk = chunk_size_for(item_emb.shape[0], self.memory_mb, item_emb.device)
        self.pool = build_pool(user_emb.detach(), item_emb.detach(), self.exclude, self.k, self.sampler, chunk)
        self.built_at = epoch
        self.refreshes += 1

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        """One contrastive negative per instance, uniform over its user's pool row (torch's RNG)."""
        if self.pool is None:
            raise RuntimeError(
                "the DNS pool has not been built yet: call model.on_epoch_start(epoch) before training "
                "(recbole_dns's trainer does it at the start of every epoch)"
            )
        users = users.to(self.pool.device)
        cols = torch.randint(self.k, users.shape, device=self.pool.device)
        return torch.take(self.pool, users * self.k + cols)

    def state_dict(self) -> dict:
        return {"pool": self.pool, "built_at": self.built_at, "refreshes": self.refreshes}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        pool = state.get("pool")
        if pool is not None and tuple(pool.shape) != (self.n_users, self.k):
            raise ValueError(
                f"checkpoint DNS pool has shape {tuple(pool.shape)}, expected "
                f"{(self.n_users, self.k)} (was dns_k or the dataset changed?)"
            )
        self.pool = pool.to(device) if (pool is not None and device is not None) else pool
        self.built_at = int(state.get("built_at", -1))
        self.refreshes = int(state.get("refreshes", 0))


@dataclass
class DNSBatch:
    """A training batch as the DNS loss sees it: the item ids and the embeddings the loss used."""

    interaction: Any
    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor
    dns_neg_items: torch.Tensor
    user_e: torch.Tensor
    pos_e: torch.Tensor
    neg_e: torch.Tensor
    dns_neg_e: torch.Tensor


class DNSModel:
    """Mixin that turns a RecBole model into its DNS variant; put it first among the bases.

    ``class BPR_DNS(DNSModel, BPR)``: the base model's ``__init__`` runs first, then this one reads
    ``dns_tau`` and builds the model's :class:`DNSPool` from the training dataset. A variant provides

    * :meth:`train_tables` - ``(users [n_users, d], items [n_items, d])``, the tables the loss is
      computed on (with gradient; e.g. ``self.forward()`` for a graph model);
    * :meth:`dns_tables` - the tables the pool is built from (default: :meth:`train_tables`, called
      under ``no_grad`` once per refresh);
    * :meth:`extra_losses` - the model's own terms (L2, self-supervised losses), from a :class:`DNSBatch`.

    ``calculate_loss`` returns ``(dns_loss, *extra_losses)``; ``predict`` and ``full_sort_predict`` stay
    the base model's. The pool travels in checkpoints through ``other_parameter()``; the ``state_dict``
    is the base model's, so a variant's weights load into its base.
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
        self.dns_pool = DNSPool.from_dataset(dataset, config)
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
    def on_epoch_start(self, epoch: int) -> bool:
        """Rebuild the pool if ``epoch`` is a refresh epoch (0, n, 2n, ...); returns whether it did."""
        if not self.dns_pool.due(epoch):
            return False
        with torch.no_grad():
            users, items = self.dns_tables()
        self.dns_pool.refresh(users, items, epoch)
        return True

    def reset_eval_cache(self) -> None:
        """Drop RecBole's cached full-sort tables (``restore_user_e``/``restore_item_e``) once training goes on."""
        if getattr(self, "restore_user_e", None) is not None or getattr(self, "restore_item_e", None) is not None:
            self.restore_user_e = self.restore_item_e = None

    def calculate_loss(self, interaction: Any) -> tuple[torch.Tensor, ...]:
        self.reset_eval_cache()
        users = interaction[self.USER_ID]
        dns_neg = self.dns_pool.sample(users)
        user_table, item_table = self.train_tables()
        # one lookup for the three item columns (F.embedding's backward is much faster on the CPU than
        # tensor indexing), kept stacked as [3, B, d] for the loss
        item_ids = torch.stack([interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID], dns_neg])
        user_e = F.embedding(users, user_table)
        candidates = F.embedding(item_ids, item_table)
        main = stacked_dns_loss(user_e, candidates, self.dns_tau, self.dns_reduction)
        batch = DNSBatch(interaction, users, *item_ids.unbind(0), user_e, *candidates.unbind(0))
        for observe in self.dns_observers:
            observe(batch)
        return (main, *self.extra_losses(batch))

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
