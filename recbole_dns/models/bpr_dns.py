"""BPR_DNS: BPR trained with Dynamic Negative Sampling.

Paper: "Dynamic Negative Sampling for Contrastive Recommendation" (CIKM 2022), Sections 3.3-3.4.
"""

from __future__ import annotations

import torch

from recbole_dns.dns import DNSBatch, DNSModel
from recbole_dns.models.bpr import BPR


class BPR_DNS(DNSModel, BPR):
    """BPR whose BPR loss is replaced by the DNS loss (Eq. 5), plus BPR's L2 term.

    The pool and the loss use the user/item tables (bias columns included with ``use_bias``); the L2
    term covers the user, positive, negative and contrastive-negative vectors of the batch (the paper
    does not say whether its L2 covers ``i'-``). Prediction is BPR's dot product.

    Defaults differ from the paper (``properties/model/BPR_DNS.yaml``, ``dns_preset: warmup_band_hard64``): 10
    epochs of BPR's own loss before the first pool, a pool of each user's cosine ranks 51-150 instead of the 100
    least similar items, the hardest of ``hard_neg_m: auto`` uniform candidates as ``i-`` (64 on a sparse
    catalogue, 4 on a dense one), lr 0.005. It beat tuned BPR and the best tuned peer sampler on amazon-beauty
    and gowalla and loses yelp2018 to DNS(M,N) (5 seeds each, docs/results.md, sections 15-17).
    ``dns_preset: paper`` restores the paper's setting.
    """

    loss_terms = ("dns", "l2")  # what calculate_loss returns, for error messages

    def train_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_table(), self.item_table()

    def extra_losses(self, batch: DNSBatch) -> tuple[torch.Tensor, ...]:
        if not self.reg_weight:
            return ()
        return (self.reg_weight * batch.l2(self.require_pow),)
