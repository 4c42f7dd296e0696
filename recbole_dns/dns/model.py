"""The mixin that turns a RecBole model into its DNS variant: the model owns its pool, rebuilds it when the
trainer announces a new epoch, and trains with the DNS loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from recbole_dns.dns.compiled import loss_function
from recbole_dns.dns.loss import dns_logits
from recbole_dns.dns.pool import DNSPool
from recbole_dns.losses import l2_loss
from recbole_dns.shims import cpu_mm, lookup

#: ``dns_predict``: the base model's prediction, or the cosine of the tables
PREDICTIONS = ("model", "cosine")
#: ``dns_loss``: Eq. 5's softmax with i'- (the paper), or the pool's item as the base model's own ``i-``
#: (``negative``), or the harder, by the model's score, of the static ``i-`` and the pool's item (``hardest``)
LOSSES = ("softmax", "negative", "hardest")


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
    #: ``[K, B, d]``: the loss's item embeddings stacked (positive, static negative when kept, contrastive ones)
    items_e: torch.Tensor | None = None
    #: the squared row norms the cosine computed, ``[B]`` of ``user_e`` and ``[K, B]`` of ``items_e`` (with
    #: gradient; ``None`` for ``dns_similarity: dot``): :meth:`l2` reuses them
    user_sq: torch.Tensor | None = None
    items_sq: torch.Tensor | None = None

    def item_ids(self) -> list[torch.Tensor]:
        """The item columns a variant's L2 term covers: positive, static negative (if in the loss),
        contrastive negatives (unless ``dns_l2_dns_neg: false``)."""
        return [self.pos_items] + ([self.neg_items] if self.keep_static else []) + (
            [self.dns_neg_items] if self.l2_dns_neg else [])

    def item_embeddings(self) -> list[torch.Tensor]:
        """The embeddings of :meth:`item_ids`, as the loss used them."""
        return [self.pos_e] + ([self.neg_e] if self.keep_static else []) + ([self.dns_neg_e] if self.l2_dns_neg else [])

    def l2(self, require_pow: bool = False) -> torch.Tensor:
        """:func:`~recbole_dns.losses.l2_loss` of the user and :meth:`item_embeddings` (the contrastive
        negatives one tensor), from the squared row norms of the stacked items (the cosine's own when it
        computed them: the L2 term then adds no pass over the embeddings, forward or backward)."""
        if self.items_e is None:
            return l2_loss(self.user_e, *self.item_embeddings(), require_pow=require_pow)
        user_sq = self.user_sq if self.user_sq is not None else self.user_e.pow(2).sum(-1)
        items_sq = (self.items_sq if self.items_sq is not None else self.items_e.pow(2).sum(-1)).sum(1)  # [K]
        s = 1 if self.keep_static else 0
        parts = [user_sq.sum().unsqueeze(0), items_sq[: 1 + s]]
        if self.l2_dns_neg:
            parts.append(items_sq[1 + s :].sum().unsqueeze(0))  # [B, m, d] is one tensor
        sq = torch.cat(parts)  # the squared Frobenius norm of each tensor
        if require_pow:
            return sq.sum() / 2 / self.user_e.shape[0]
        # sqrt's gradient at 0 is infinite: a zero tensor gets the zero gradient, as torch.linalg.vector_norm's
        return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt().sum() / self.user_e.shape[0]


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
    model's own loss; with ``dns_weight: w``, the base model's own terms and ``w * dns_loss``); ``predict``
    and ``full_sort_predict`` stay the base model's unless ``dns_predict: cosine``. The pool travels in
    checkpoints through ``other_parameter()``; the ``state_dict`` is the base model's, so a variant's weights
    load into its base.

    Options beyond the paper (all off by default, see docs/configuration.md): ``dns_negs`` contrastive negatives per
    instance, ``dns_candidates`` (score that many pool items per instance and keep the hardest),
    ``dns_similarity: dot``, ``dns_keep_static: false``, ``dns_l2_dns_neg: false``, ``dns_warmup``,
    ``dns_skip`` (a rank band), ``dns_draw: instance``, ``dns_predict: cosine``, ``dns_weight`` (the DNS loss
    added to the base model's loss instead of replacing it), ``dns_loss: negative | hardest`` (no softmax: the
    pool's item, or the harder of it and ``i-``, is the base model's own negative).
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
        self.dns_loss = str(config["dns_loss"])
        weight = config["dns_weight"]
        self.dns_weight = None if weight is None else float(weight)
        if self.dns_weight is not None:  # the base model's terms, then the weighted DNS term
            self.loss_terms = (*super(DNSModel, self).loss_terms, "dns")
        elif self.dns_loss != "softmax":  # the base model's own loss
            self.loss_terms = super(DNSModel, self).loss_terms
        self.dns_pool = DNSPool.from_dataset(dataset, config)
        self.dns_compile = bool(config["dns_compile"])  # the batch loss through torch.compile (dns/compiled.py)
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
                 item_table: torch.Tensor, similarity: str | None = None, m: int | None = None) -> torch.Tensor:
        """Of each instance's candidates ``[B, M]``, the ``m`` (default ``dns_negs``) scored highest by
        ``similarity`` (default: the loss's)."""
        user_e = F.embedding(users, user_table)
        scores = dns_logits(user_e, F.embedding(candidates, item_table).transpose(0, 1), 1.0,
                            similarity or self.dns_similarity)
        top = torch.topk(scores, m or self.dns_negs, dim=0).indices  # [m, B]
        return candidates.gather(1, top.t())

    def dns_negatives(self, interaction: Any, user_table: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """``[B, m]``: the batch's contrastive negatives, from the pool (the hardest of ``dns_candidates``
        pool items per instance when that is set)."""
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if self.dns_candidates:
            drawn = self.dns_pool.sample(users, max(self.dns_candidates, self.dns_negs), items)
            return self._hardest(users, drawn.view(len(users), -1), user_table, item_table)
        return self.dns_pool.sample(users, self.dns_negs, items).view(len(users), -1)

    @torch.no_grad()
    def pool_negative(self, interaction: Any) -> torch.Tensor:
        """``[B]``: the negative ``dns_loss: negative | hardest`` gives the base model's loss: a pool item (the
        hardest of ``dns_candidates`` pool items when that is set), or for ``hardest`` the harder of it and the
        static ``i-``; hardness is the base model's score, the dot product of :meth:`train_tables`."""
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        drawn = self.dns_pool.sample(users, max(self.dns_candidates, 1), items).view(len(users), -1)
        if self.dns_loss == "hardest":
            drawn = torch.cat([interaction[self.NEG_ITEM_ID].to(drawn.device).view(-1, 1), drawn], dim=1)
        if drawn.shape[1] == 1:
            return drawn[:, 0]
        user_table, item_table = self.train_tables()
        return self._hardest(users.to(drawn.device), drawn, user_table, item_table, "dot", 1)[:, 0]

    def calculate_loss(self, interaction: Any) -> tuple[torch.Tensor, ...]:
        if not self.dns_active:
            return super().calculate_loss(interaction)
        if self.dns_loss != "softmax":  # the pool as a negative sampler: the base model's loss, its i- replaced
            static = interaction[self.NEG_ITEM_ID]
            interaction[self.NEG_ITEM_ID] = chosen = self.pool_negative(interaction).to(static.device)
            for observe in self.dns_observers:
                observe(DNSBatch(interaction, interaction[self.USER_ID], interaction[self.ITEM_ID], static, chosen,
                                 *(None,) * 4, keep_static=False))
            return super().calculate_loss(interaction)
        if self.dns_weight is not None:
            base = super().calculate_loss(interaction)
            terms = base if isinstance(base, tuple) else (base,)
            return (*terms, self.dns_weight * self.dns_batch_loss(interaction)[0])
        main, batch = self.dns_batch_loss(interaction)
        return (main, *self.extra_losses(batch))

    def dns_batch_loss(self, interaction: Any) -> tuple[torch.Tensor, DNSBatch]:
        """The DNS loss of a batch (Eq. 5, reduced by ``dns_reduction``) and the :class:`DNSBatch` it saw."""
        self.reset_eval_cache()
        users = interaction[self.USER_ID]
        user_table, item_table = self.train_tables()
        dns_neg = self.dns_negatives(interaction, user_table, item_table)  # [B, m]
        static = [interaction[self.NEG_ITEM_ID]] if self.dns_keep_static else []
        # one lookup for all item columns (its backward is much faster on the CPU than tensor indexing's),
        # kept stacked as [K, B, d] for the loss: positive, static negative, contrastive ones
        item_ids = torch.cat([torch.stack([interaction[self.ITEM_ID], *static]), dns_neg.t()])
        user_e = lookup(users, user_table)
        candidates = lookup(item_ids, item_table)
        main, logits, user_sq, items_sq = loss_function(self.dns_compile)(
            user_e, candidates, self.dns_tau, self.dns_similarity, self.dns_reduction)
        s = len(static)
        dns_e = candidates[1 + s:].transpose(0, 1)  # [B, m, d]
        single = self.dns_negs == 1
        neg_ids = interaction[self.NEG_ITEM_ID]
        batch = DNSBatch(
            interaction, users, item_ids[0], neg_ids, dns_neg[:, 0] if single else dns_neg,
            user_e, candidates[0], candidates[1] if s else F.embedding(neg_ids, item_table).detach(),
            dns_e[:, 0] if single else dns_e, logits.detach(), self.dns_keep_static, self.dns_l2_dns_neg, candidates,
            user_sq, items_sq,
        )
        for observe in self.dns_observers:
            observe(batch)
        return main, batch

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
        return cpu_mm(users[interaction[self.USER_ID]], items.t()).view(-1)

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
