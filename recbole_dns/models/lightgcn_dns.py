"""LightGCN_DNS: LightGCN trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

import torch

from recbole_dns.dns import DNSBatch, DNSModel
from recbole_dns.models.lightgcn import LightGCN


class LightGCN_DNS(DNSModel, LightGCN):
    """LightGCN whose BPR loss is replaced by the DNS loss on the final (propagated) embeddings.

    The L2 term on the layer-0 embeddings is kept (it also covers ``i'-``). The pool is built from one
    no-grad propagation per refresh. Prediction is LightGCN's.
    """

    loss_terms = ("dns", "l2")  # what calculate_loss returns, for error messages

    def train_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()

    def extra_losses(self, batch: DNSBatch) -> tuple[torch.Tensor, ...]:
        return (self.ego_loss(batch.users, *batch.item_ids()),)
