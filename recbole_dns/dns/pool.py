"""The pool of contrastive negatives: its refresh schedule, the per-instance draw of ``i'-`` and its
checkpoint state (Section 3.3 of the paper)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recbole_dns.defaults import default
from recbole_dns.dns.index import index_pool, resolve_index
from recbole_dns.dns.kernel import REFRESH_DTYPES, ExclusionRows, build_pool, chunk_size_for
from recbole_dns.errors import ConfigError
from recbole_dns.parallel import all_gather_rows, rank_and_world, shard_bounds, shared_seed
from recbole_dns.sampling import exclusion_matrix

#: how ``i'-`` is drawn from the pool: per batch with replacement (``batch``), or fixed per training
#: instance until the next refresh, without repeats within a user while it has at most k instances (``instance``)
DRAWS = ("batch", "instance")


def is_share(value: Any) -> bool:
    """Whether a ``dns_k`` / ``dns_skip`` value is a share of the catalogue (a float in (0, 1))."""
    return isinstance(value, float) and 0 < value < 1


def catalogue_share(value: float, n_items: int, minimum: int) -> int:
    """``dns_k`` / ``dns_skip`` as an item count: an integer as it is; a share in (0, 1) of the catalogue's
    ``n_items`` (:func:`is_share`), rounded, at least ``minimum``."""
    if is_share(value):
        return max(minimum, round(value * n_items))
    return int(value)


class DNSPool:
    """The per-user pool of contrastive negatives, its refresh schedule and its checkpoint state.

    The pool is (re)built at the start of epochs ``start``, ``start + n``, ``start + 2n``, ... (``start`` is
    ``dns_warmup``, 0 by default; the previous pool is dropped). :meth:`sample` gives every training
    instance ``m`` items of its user's pool row: uniformly at random per batch (``draw="batch"``), or the
    items assigned to the instance at the last refresh (``draw="instance"``, the paper's Section 3.3: a
    user with ``m`` training instances gets ``m`` distinct pool items while ``m <= k``).

    In a distributed run (a ``torch.distributed`` process group of ``N`` ranks), every rank builds the
    rows of its ``1/N`` of the users (:meth:`build_shard`) and the shards are all-gathered: every rank
    holds the same pool, with the items of a one-process build from the same tables in every row for ``dissimilar``
    and ``similar`` (a row's order may differ where it has none, see :func:`build_pool`); ``random`` draws each shard
    from one seed shared by the ranks, offset by the rank.
    """

    def __init__(
        self,
        exclude: sp.csr_matrix,
        n: int,
        k: int,
        sampler: str = "dissimilar",
        memory_mb: float | None = None,
        dtype: str = "float32",
        skip: int = 0,
        start: int = 0,
        draw: str = "batch",
        index: str = "auto",
        nprobe: int | None = None,
    ) -> None:
        if draw not in DRAWS:
            raise ValueError(f"draw must be one of {', '.join(DRAWS)}; got {draw!r}")
        self.exclude = sp.csr_matrix(exclude)
        self.exclude.sort_indices()
        self.n, self.k, self.sampler = int(n), int(k), sampler
        self.memory_mb = float(default("dns_refresh_mb") if memory_mb is None else memory_mb)
        self.dtype = REFRESH_DTYPES[dtype]
        self._rows: ExclusionRows | None = None  # the exclusion rows of this process's shard, on its device
        self._rows_key: tuple | None = None
        self.skip, self.start, self.draw = int(skip), int(start), draw
        self.index = index
        resolve_index(index, self.exclude.shape[1], "cpu", sampler)  # checks the name
        self.nprobe = int(default("dns_index_nprobe") if nprobe is None else nprobe)
        self.index_used: str | None = None  # what the last refresh used: exact or ivf
        self.pool: torch.Tensor | None = None
        self.perm: torch.Tensor | None = None  # draw="instance": each user's order of its pool row
        self.built_at: int = -1
        self.refreshes: int = 0
        # draw="instance": (user, item) keys of the training pairs and the CSR row starts, on the device in use
        self._keys: torch.Tensor | None = None
        self._indptr: torch.Tensor | None = None

    @classmethod
    def from_dataset(cls, dataset: Any, config: Any) -> DNSPool:
        """Pool over a RecBole training dataset: training positives and padding item 0 are excluded.

        ``dns_k`` and ``dns_skip`` are item counts, or shares of the catalogue when in (0, 1) (:func:`catalogue_share`).

        Raises:
            ConfigError: ``dns_k`` (plus ``dns_skip``) is larger than the catalogue (padding item 0 not counted).
        """
        n_items = dataset.item_num - 1
        k, skip = catalogue_share(config["dns_k"], n_items, 1), catalogue_share(config["dns_skip"], n_items, 0)
        given = {key: f"{config[key]} ({v} items)" if v != config[key] else f"{v}"
                 for key, v in (("dns_k", k), ("dns_skip", skip))}
        if k > n_items:
            raise ConfigError(
                f"config key 'dns_k' must be between 1 and the number of items of dataset "
                f"'{config['dataset']}' ({n_items}); got {given['dns_k']}"
            )
        if k + skip > n_items:
            raise ConfigError(
                f"config keys 'dns_skip' + 'dns_k' must be at most the number of items of dataset "
                f"'{config['dataset']}' ({n_items}); got {given['dns_skip']} + {given['dns_k']}"
            )
        return cls(exclusion_matrix(dataset), config["dns_n"], k, config["dns_sampler"],
                   config["dns_refresh_mb"], config["dns_refresh_dtype"], skip=skip,
                   start=config["dns_warmup"], draw=config["dns_draw"], index=config["dns_index"],
                   nprobe=config["dns_index_nprobe"])

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
        (:func:`~recbole_dns.parallel.shard_bounds`): :func:`build_pool` on those users' embeddings
        and exclusion rows, chunked to ``memory_mb``, or :func:`~recbole_dns.dns.index.index_pool` when
        ``index`` resolves to an index (every rank builds it over all items and queries its own users)."""
        start, end = shard_bounds(self.n_users, world_size, rank)
        self.index_used = resolve_index(self.index, item_emb.shape[0], item_emb.device, self.sampler)
        if self.index_used != "exact":
            return index_pool(user_emb.detach()[start:end], item_emb.detach(), self.exclude[start:end], self.k,
                              self.sampler, self.skip, self.nprobe, self.memory_mb)
        chunk = chunk_size_for(item_emb.shape[0], self.memory_mb, item_emb.device)
        key = (str(item_emb.device), start, end)
        if self._rows_key != key:  # converted once per shard and device, not at every refresh
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
        # rows of the flat pool: a 1-D index_select is ~3x faster than 2-D advanced indexing on the CPU
        cols.add_(users.unsqueeze(1) * self.k)
        out = self.pool.reshape(-1).index_select(0, cols.view(-1)).view(cols.shape)
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
