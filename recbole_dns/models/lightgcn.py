"""LightGCN that runs on today's SciPy and torch.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.lightgcn import LightGCN as RecBoleLightGCN

from recbole_dns.graph import layer_mean, propagate, symmetric_norm_adjacency, to_csr
from recbole_dns.losses import EgoL2Mixin
from recbole_dns.shims import cpu_mm


class LightGCN(EgoL2Mixin, RecBoleLightGCN):
    """RecBole's LightGCN (BPR loss, mean of the layer embeddings, L2 on the ego embeddings).

    Differs from RecBole 1.2.1 only in how the normalised adjacency is built and used: from COO (RecBole's
    ``dok_matrix._update`` is gone in SciPy >= 1.13), stored as CSR, propagated with a symmetric sparse
    product (:func:`recbole_dns.graph.propagate`), and in its full-sort product (:func:`recbole_dns.shims.cpu_mm`,
    1.3-1.6x faster on this project's AMD CPU). Same model as the paper's, with RecBole's defaults
    (2 layers, reg_weight 1e-5). The L2 term (:class:`~recbole_dns.losses.EgoL2Mixin`) is RecBole's: a sum
    of norms by default, the paper's squared norm with ``require_pow: true``.
    """

    loss_terms = ("bpr + l2",)  # what calculate_loss returns, for error messages
    #: ``forward()`` gives the tables ``calculate_loss`` trains and scores on (``hard_neg`` reuses them in a step)
    tables_from_forward = True

    def get_norm_adj_mat(self) -> torch.Tensor:
        return to_csr(symmetric_norm_adjacency(self.interaction_matrix))

    def layers(self) -> list[torch.Tensor]:
        """Every layer's embeddings, users then items: ``L+1`` tables ``[n_users + n_items, d]``."""
        ego = self.get_ego_embeddings()
        layers = [ego]
        for _ in range(self.n_layers):
            ego = propagate(self.norm_adj_matrix, ego)
            layers.append(ego)
        return layers

    def layer_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's embeddings: users ``[n_users, L+1, d]`` and items ``[n_items, L+1, d]``."""
        return torch.split(torch.stack(self.layers(), dim=1), [self.n_users, self.n_items])

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.split(layer_mean(self.layers()), [self.n_users, self.n_items])

    def full_sort_predict(self, interaction: Interaction) -> torch.Tensor:
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.forward()
        return cpu_mm(self.restore_user_e[interaction[self.USER_ID]], self.restore_item_e.t()).view(-1)
