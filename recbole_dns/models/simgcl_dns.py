"""SimGCL_DNS: SimGCL trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

from recbole_dns.dns import DNS_NEG_ITEM_ID, DNSModel
from recbole_dns.models.simgcl import SimGCL


class SimGCL_DNS(DNSModel, SimGCL):
    """SimGCL whose BPR loss is replaced by the DNS loss on the final, noise-free embeddings.

    SimGCL's InfoNCE between its two noisy views (weight ``lambda``) and its L2 term are kept. The pool
    is built from one no-grad propagation without noise per refresh. Prediction is SimGCL's.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dns_init(config)

    def train_tables(self, interaction=None):
        self.restore_user_e = self.restore_item_e = None
        return self.forward()

    def extra_losses(self, interaction, user_e, pos_e, neg_e, dns_neg_e):
        i = interaction
        reg = self.ego_loss(i[self.USER_ID], i[self.ITEM_ID], i[self.NEG_ITEM_ID], i[DNS_NEG_ITEM_ID])
        return reg, self.cl_loss(interaction)
