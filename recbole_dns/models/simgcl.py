"""SimGCL: graph contrastive learning with uniform noise instead of graph augmentations.

Yu et al., "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for Recommendation",
SIGIR 2022.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_dns.graph import layer_mean, propagate
from recbole_dns.losses import info_nce
from recbole_dns.models.lightgcn import LightGCN


class SimGCL(LightGCN):
    """SimGCL on RecBole: a LightGCN encoder, BPR + L2, and InfoNCE between two noisy views.

    Each view adds ``sign(e) * normalize(U(0,1)) * eps`` to every layer's embeddings during
    propagation; the InfoNCE (``temperature``, weight ``lambda``) is taken over the batch's unique users
    and unique positive items, mean-reduced. The final embedding is the mean of layers 1..L, skipping
    layer 0, as the paper does. Keys: ``eps`` (paper's epsilon, 0.1), ``lambda`` (0.02), ``temperature``
    (tau, 0.2), ``n_layers`` (2), ``reg_weight``.

    Starts from RecBole's Xavier initialisation, as the paper does; ``init_std: x`` starts from ``N(0, x**2)``
    instead. From Xavier the propagated layers (all SimGCL uses) start below the noise ``eps`` (row norms 0.03 and
    0.015 on ml-100k); the InfoNCE on normalised views, whose gradient grows as 1/norm, then outweighs BPR's and at
    lr 0.001 the BPR term stays at log 2 on ml-100k (with ``eps`` 0 too: the InfoNCE, not the noise); from N(0, 1)
    it trains there. At the default lr 0.005 Xavier trains on both datasets measured and N(0, 1) costs a quarter
    of the quality on amazon-beauty (docs/results.md, sections 10 and 18), so Xavier is the default.
    ``use_layer0: true`` averages layers 0..L (as LightGCN) instead of the paper's 1..L. Why Xavier stalls at lr 0.001
    on ml-100k and trains on amazon-beauty: on a dense graph two propagations from random rows shrink them 10x and
    make the users nearly collinear (mean cosine 0.57 between users at layer 2 on ml-100k, 0.003 on amazon-beauty),
    so their BPR scores barely differ; layer 0 in the mean restores a part that is neither (results.md, section 10).
    The L2 term is RecBole's (``EmbLoss`` on the layer-0 embeddings of the batch, as in RecBole's LightGCN)
    where the authors' code regularises the propagated embeddings; ``lambda`` defaults to 0.02, not the paper's
    0.5, which does not train on ml-100k from either start (validation NDCG@10 0.111 from Xavier, 0.014 from
    N(0, 1), against 0.248 at 0.02).
    """

    loss_terms = ("bpr", "l2", "cl")  # what calculate_loss returns, for error messages
    simgcl_keys = True  # reads ``init_std`` and ``use_layer0`` (other models reject them)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if config["init_std"] is not None:
            for table in (self.user_embedding, self.item_embedding):
                torch.nn.init.normal_(table.weight, std=float(config["init_std"]))
        self.eps = float(config["eps"])
        self.cl_weight = float(config["lambda"])
        self.temperature = float(config["temperature"])
        self.use_layer0 = bool(config["use_layer0"])

    def perturb(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb + sign(emb) * normalize(U(0,1)) * eps``: a noise of norm eps in emb's orthant, per row."""
        noise = F.normalize(torch.rand_like(emb), dim=-1)
        return emb + torch.sign(emb) * noise * self.eps

    def forward(self, perturbed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        ego = self.get_ego_embeddings()
        layers = [ego] if self.use_layer0 else []  # layer 0 is never perturbed
        for _ in range(self.n_layers):
            ego = propagate(self.norm_adj_matrix, ego)
            if perturbed:
                ego = self.perturb(ego)
            layers.append(ego)
        final = layer_mean(layers)
        return torch.split(final, [self.n_users, self.n_items])

    def cl_loss(self, interaction: Interaction) -> torch.Tensor:
        """``lambda`` x (InfoNCE over the batch's unique users + over its unique positive items)."""
        users = torch.unique(interaction[self.USER_ID])
        items = torch.unique(interaction[self.ITEM_ID])
        user1, item1 = self.forward(perturbed=True)
        user2, item2 = self.forward(perturbed=True)
        loss = info_nce(user1[users], user2[users], self.temperature) + info_nce(
            item1[items], item2[items], self.temperature
        )
        return self.cl_weight * loss

    def calculate_loss(self, interaction: Interaction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.restore_user_e = self.restore_item_e = None
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward()
        u, p, n = users[user], items[pos], items[neg]
        bpr = self.mf_loss((u * p).sum(-1), (u * n).sum(-1))
        return bpr, self.ego_loss(user, pos, neg), self.cl_loss(interaction)
