"""BPR with the optional biases of the DNS paper's BPR.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009; biases as in
Rendle et al., "Neural Collaborative Filtering vs. Matrix Factorization Revisited", RecSys 2020.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.bpr import BPR as RecBoleBPR
from torch import nn

from recbole_dns.losses import l2_loss
from recbole_dns.shims import cpu_mm, lookup


class BPR(RecBoleBPR):
    """RecBole's BPR, plus an L2 term and optional biases.

    Differences from RecBole's BPR: ``reg_weight`` adds RecBole's usual L2 term (:func:`recbole_dns.losses.l2_loss`,
    ``EmbLoss`` as in its LightGCN: a sum of norms, or the papers' squared norm with ``require_pow: true``)
    on the batch's embeddings (RecBole's BPR has none and relies on ``weight_decay``); with ``use_bias: true`` the score is
    ``b + b_u + b_i + e_u . e_i`` (user, item and global biases, as the DNS paper's BPR). The biases are
    kept as two extra embedding columns, ``[e_u, b_u, 1] . [e_i, 1, b_i]``, so every consumer of the
    tables (scores, the DNS pool, the DNS cosine) sees them. The global bias shifts every score of a user
    equally: it changes neither the BPR loss nor any ranking. With ``use_bias: false`` and
    ``reg_weight: 0`` this is exactly RecBole's BPR.
    """

    loss_terms = ("bpr", "l2")  # what calculate_loss returns, for error messages

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.reg_weight = float(config["reg_weight"] or 0.0)
        self.require_pow = bool(config["require_pow"])
        self.use_bias = bool(config["use_bias"])
        if self.use_bias:
            self.user_bias = nn.Parameter(torch.zeros(self.n_users))
            self.item_bias = nn.Parameter(torch.zeros(self.n_items))
            self.global_bias = nn.Parameter(torch.zeros(1))

    def user_table(self, user: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors (all users if ``user`` is None), bias columns appended when ``use_bias``."""
        emb = self.user_embedding.weight if user is None else lookup(user, self.user_embedding.weight)
        if not self.use_bias:
            return emb
        bias = self.user_bias if user is None else self.user_bias[user]
        return torch.cat([emb, bias.unsqueeze(-1), torch.ones_like(bias).unsqueeze(-1)], dim=-1)

    def item_table(self, item: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors (all items if ``item`` is None), bias columns appended when ``use_bias``."""
        emb = self.item_embedding.weight if item is None else lookup(item, self.item_embedding.weight)
        if not self.use_bias:
            return emb
        bias = self.item_bias if item is None else self.item_bias[item]
        return torch.cat([emb, torch.ones_like(bias).unsqueeze(-1), bias.unsqueeze(-1)], dim=-1)

    def l2_loss(self, *embeddings: torch.Tensor) -> torch.Tensor:
        """``reg_weight`` x :func:`recbole_dns.losses.l2_loss` (norms; squared norms with ``require_pow``)."""
        return self.reg_weight * l2_loss(*embeddings, require_pow=self.require_pow)

    def calculate_loss(self, interaction: Interaction) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        user_e = self.user_table(interaction[self.USER_ID])
        pos_e = self.item_table(interaction[self.ITEM_ID])
        neg_e = self.item_table(interaction[self.NEG_ITEM_ID])
        pos_score = (user_e * pos_e).sum(-1)
        neg_score = (user_e * neg_e).sum(-1)
        loss = self.loss(pos_score, neg_score)
        if self.reg_weight:
            return loss, self.l2_loss(user_e, pos_e, neg_e)
        return loss

    def predict(self, interaction: Interaction) -> torch.Tensor:
        user_e = self.user_table(interaction[self.USER_ID])
        item_e = self.item_table(interaction[self.ITEM_ID])
        score = (user_e * item_e).sum(-1)
        return score + self.global_bias if self.use_bias else score

    def full_sort_predict(self, interaction: Interaction) -> torch.Tensor:
        user_e = self.user_table(interaction[self.USER_ID])
        score = cpu_mm(user_e, self.item_table().t())
        if self.use_bias:
            score = score + self.global_bias
        return score.view(-1)
