"""SGL_DNS: SGL trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

import torch

from recbole_dns.dns import DNSBatch, DNSModel
from recbole_dns.models.sgl import SGL


class SGL_DNS(DNSModel, SGL):
    """SGL whose BPR loss is replaced by the DNS loss on the final embeddings of the full graph.

    SGL's InfoNCE between its two augmented graphs and its L2 term are kept with their weights. SGL sums
    its losses over the batch, so the DNS loss is summed too (``dns_reduction = "sum"``), which keeps
    ``ssl_weight`` meaning what it means in SGL. The pool is built from one no-grad propagation on the
    full graph per refresh, without touching the augmented graphs. Prediction is SGL's.
    """

    loss_terms = ("dns", "l2", "ssl")  # what calculate_loss returns, for error messages

    dns_reduction = "sum"

    def train_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_tables()

    def extra_losses(self, batch: DNSBatch) -> tuple[torch.Tensor, ...]:
        user_sub1, item_sub1 = self.forward(self.sub_graph1)
        user_sub2, item_sub2 = self.forward(self.sub_graph2)
        ssl = self.calc_ssl_loss(batch.users, batch.pos_items, user_sub1, user_sub2, item_sub1, item_sub2)
        return self.ego_loss(batch.users, *batch.item_ids()), ssl
