"""LightGCN_DNS: LightGCN trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

from recbole_dns.dns import DNS_NEG_ITEM_ID, DNSModel
from recbole_dns.models.lightgcn import LightGCN


class LightGCN_DNS(DNSModel, LightGCN):
    """LightGCN whose BPR loss is replaced by the DNS loss on the final (propagated) embeddings.

    The L2 term on the layer-0 embeddings is kept (it also covers ``i'-``). The pool is built from one
    no-grad propagation per refresh. Prediction is LightGCN's.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dns_init(config)

    def train_tables(self, interaction=None):
        self.restore_user_e = self.restore_item_e = None  # the cached eval tables are stale once we train
        return self.forward()

    def extra_losses(self, interaction, user_e, pos_e, neg_e, dns_neg_e):
        i = interaction
        return (self.ego_loss(i[self.USER_ID], i[self.ITEM_ID], i[self.NEG_ITEM_ID], i[DNS_NEG_ITEM_ID]),)
