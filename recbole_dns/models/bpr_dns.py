"""BPR_DNS: BPR trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

from recbole_dns.dns import DNSBatch, DNSModel
from recbole_dns.models.bpr import BPR


class BPR_DNS(DNSModel, BPR):
    """BPR whose BPR loss is replaced by the DNS loss (Eq. 5), plus BPR's L2 term.

    The pool and the loss use the user/item tables (bias columns included with ``use_bias``); the L2
    term covers the user, positive, negative and contrastive-negative vectors of the batch (the paper
    does not say whether its L2 covers ``i'-``). Prediction is BPR's dot product.

    Defaults differ from the paper (``properties/model/BPR_DNS.yaml``): 10 epochs of BPR's own loss before
    the first pool, and a pool of each user's cosine ranks 51-150 instead of the 100 least similar items.
    It beats tuned BPR on amazon-beauty (the one shared dataset run so far) but not RecBole's tuned dynamic
    sampler at its shipped learning rate; the shipping rule (beat the tuned base and every tuned peer on two
    of gowalla, yelp2018, amazon-beauty) is not met (docs/results.md, section 8). ``dns_preset: paper``
    restores the paper's setting.
    """

    loss_terms = ("dns", "l2")  # what calculate_loss returns, for error messages

    def train_tables(self):
        return self.user_table(), self.item_table()

    def extra_losses(self, batch: DNSBatch):
        if not self.reg_weight:
            return ()
        return (self.reg_weight * batch.l2(self.require_pow),)
