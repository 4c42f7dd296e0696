"""BPR_DNS: BPR trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

from recbole_dns.dns import DNSModel
from recbole_dns.models.bpr import BPR


class BPR_DNS(DNSModel, BPR):
    """BPR whose BPR loss is replaced by the DNS loss (Eq. 5), plus the L2 term.

    The pool is built from the user/item tables (bias columns included with ``use_bias``); the L2
    term covers the user, positive, negative and contrastive-negative vectors of the batch.
    Prediction is BPR's dot product. The paper does not say whether its L2 term covers ``i'-``.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dns_init(config)

    def train_tables(self, interaction=None):
        return self.user_table(), self.item_table()

    def extra_losses(self, interaction, user_e, pos_e, neg_e, dns_neg_e):
        return (self.l2_loss(user_e, pos_e, neg_e, dns_neg_e),) if self.reg_weight else ()
