"""SimGCL_DNS: SimGCL trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

import torch

from recbole_dns.dns import DNSBatch, DNSModel
from recbole_dns.models.simgcl import SimGCL


class SimGCL_DNS(DNSModel, SimGCL):
    """SimGCL whose BPR loss is replaced by the DNS loss on the final, noise-free embeddings.

    SimGCL's InfoNCE between its two noisy views (weight ``lambda``) and its L2 term are kept. The pool
    is built from one no-grad propagation without noise per refresh. Prediction is SimGCL's.
    """

    loss_terms = ("dns", "l2", "cl")  # what calculate_loss returns, for error messages

    def train_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()

    def extra_losses(self, batch: DNSBatch) -> tuple[torch.Tensor, ...]:
        reg = self.ego_loss(batch.users, *batch.item_ids())
        return reg, self.cl_loss(batch.interaction)
