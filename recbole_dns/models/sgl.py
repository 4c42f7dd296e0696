"""SGL that builds its graphs with today's torch.

Wu et al., "Self-supervised Graph Learning for Recommendation", SIGIR 2021.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.sgl import SGL as RecBoleSGL

from recbole_dns.graph import layer_mean, propagate, to_csr
from recbole_dns.losses import EgoL2Mixin, info_nce_table
from recbole_dns.shims import cpu_mm


class SGL(EgoL2Mixin, RecBoleSGL):
    """RecBole's SGL (LightGCN encoder, BPR + InfoNCE between two augmented graphs, SUM-reduced).

    Differs from RecBole 1.2.1 only in building its sparse tensors with ``torch.sparse_coo_tensor``
    (``torch.sparse.FloatTensor`` is deprecated in torch 2.x), stored as CSR and propagated with a
    symmetric sparse product (:func:`recbole_dns.graph.propagate`). As in RecBole, the two augmented graphs
    are rebuilt whenever ``train()`` is called (once per epoch under the Trainer), and both losses are
    sums over the batch, as in the authors' code. The L2 term honours ``require_pow`` (RecBole 1.2.1's SGL
    ignores it and always takes norms, not squared norms). Its InfoNCE is RecBole's, computed in cache-sized
    blocks of the batch with one pass over each block's scores (:meth:`calc_ssl_loss`: the same value; a
    training step on amazon-beauty takes 0.77x, then 0.83x of that: docs/benchmarks.md, "SGL's InfoNCE").
    The full-sort product goes through :func:`recbole_dns.shims.cpu_mm` (1.3-1.6x faster on this project's
    AMD CPU).
    """

    loss_terms = ("bpr + l2 + ssl",)  # what calculate_loss returns, for error messages

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.require_pow = bool(config["require_pow"])

    def csr2tensor(self, matrix: sp.csr_matrix) -> torch.Tensor:
        coo = matrix.tocoo()
        index = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
        values = torch.as_tensor(coo.data.astype(np.float32))
        return to_csr(torch.sparse_coo_tensor(index, values, coo.shape, check_invariants=True)).to(self.device)

    def forward(self, graph: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        layers = [ego]
        for adj in graph if isinstance(graph, list) else [graph] * self.n_layers:
            ego = propagate(adj, ego)
            layers.append(ego)
        final = layer_mean(layers)
        return torch.split(final, [self.n_users, self.n_items])

    def score_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)`` of the full training graph: the tables SGL's scores are inner products of."""
        return self.forward(self.train_graph)

    def full_sort_predict(self, interaction: Interaction) -> torch.Tensor:
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.score_tables()
        return cpu_mm(self.restore_user_e[interaction[self.USER_ID]], self.restore_item_e.t())

    def calc_bpr_loss(self, user_emd: torch.Tensor, item_emd: torch.Tensor, user_list: torch.Tensor,
                      pos_item_list: torch.Tensor, neg_item_list: torch.Tensor) -> torch.Tensor:
        """RecBole's summed BPR loss plus :meth:`ego_loss` (which honours ``require_pow``)."""
        u_e, pi_e, ni_e = user_emd[user_list], item_emd[pos_item_list], item_emd[neg_item_list]
        bpr = -F.logsigmoid((u_e * pi_e).sum(dim=1) - (u_e * ni_e).sum(dim=1)).sum()
        return bpr + self.ego_loss(user_list, pos_item_list, neg_item_list)

    def calc_ssl_loss(self, user_list: torch.Tensor, pos_item_list: torch.Tensor, user_sub1: torch.Tensor,
                      user_sub2: torch.Tensor, item_sub1: torch.Tensor, item_sub2: torch.Tensor) -> torch.Tensor:
        """RecBole's InfoNCE of the two augmented graphs (every user and item as a negative), the same value
        computed by :func:`recbole_dns.losses.info_nce_table`."""
        users = info_nce_table(user_sub1[user_list], user_sub2, user_list, self.ssl_tau)
        items = info_nce_table(item_sub1[pos_item_list], item_sub2, pos_item_list, self.ssl_tau)
        return (users + items) * self.ssl_weight
