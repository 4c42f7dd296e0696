"""MixGCF: synthetic hard negatives by positive and hop mixing, on a LightGCN backbone.

Huang et al., "MixGCF: An Improved Training Method for Graph Neural Network-based Recommender Systems",
KDD 2021.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction

from recbole_dns.errors import ConfigError
from recbole_dns.losses import l2_loss
from recbole_dns.models.lightgcn import LightGCN
from recbole_dns.sampling import ExclusionIndex, exclusion_matrix


def mix_negatives(
    user_layers: torch.Tensor,
    pos_layers: torch.Tensor,
    cand_layers: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """MixGCF's synthetic negative, per layer.

    Args:
        user_layers: ``[B, L+1, d]`` each layer's user embedding.
        pos_layers: ``[B, L+1, d]`` the positive item's.
        cand_layers: ``[B, n, L+1, d]`` the ``n`` candidate negatives'.
        alpha: ``[B, L+1]`` positive-mixing coefficients in (0, 1).

    Returns:
        ``[B, L+1, d]``: at every layer ``l``, among the mixed candidates
        ``alpha_l * e_pos^l + (1 - alpha_l) * e_cand^l``, the one with the largest inner product with
        the user's pooled (mean over layers) embedding (hop mixing).
    """
    a = alpha[:, None, :, None]
    mixed = a * pos_layers.unsqueeze(1) + (1 - a) * cand_layers  # positive mixing  [B, n, L+1, d]
    query = user_layers.mean(dim=1)  # pooled user  [B, d]
    scores = (mixed * query[:, None, None, :]).sum(-1)  # [B, n, L+1]
    pick = scores.argmax(dim=1).detach()  # hop mixing: the best candidate per layer  [B, L+1]
    index = pick[:, None, :, None].expand(-1, 1, -1, mixed.shape[-1])
    return mixed.gather(1, index).squeeze(1)


class MixGCF(LightGCN):
    """LightGCN trained with MixGCF's synthetic negatives.

    For each (u, i+), ``n_negs`` candidates are drawn uniformly among u's non-interacted items (on the
    model's device, vectorised over the batch, RecBole's own negative is not used); the synthetic
    negative is the mean over layers of :func:`mix_negatives` (``alpha ~ U(0,1)`` per layer and
    instance). Loss: BPR with it, plus ``reg_weight`` x RecBole's L2 on the layer-0 embeddings of the
    user, the positive and the synthetic negative (RecBole's norm, or the authors' squared norm with
    ``require_pow: true``). Defaults from the authors' code: 3 layers and mean pooling (all their
    LightGCN commands), 64 candidates (their Yelp2018 command; 32 on Alibaba, 16 on Amazon), L2 1e-4
    (their default). Prediction is LightGCN's.
    """

    own_negatives = True  # draws its own candidates (n_negs): hard_neg does not apply

    loss_terms = ("bpr", "l2")  # what calculate_loss returns, for error messages

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_negs = int(config["n_negs"])
        if self.n_negs < 1:
            raise ConfigError(f"config key 'n_negs' must be an integer >= 1; got {self.n_negs}")
        self.exclusion = ExclusionIndex(exclusion_matrix(dataset), self.device)

    def calculate_loss(self, interaction: Interaction) -> tuple[torch.Tensor, torch.Tensor]:
        self.restore_user_e = self.restore_item_e = None
        user, pos = interaction[self.USER_ID], interaction[self.ITEM_ID]
        users, items = self.layer_embeddings()
        u, p = users[user], items[pos]  # [B, L+1, d]
        candidates = self.exclusion.sample(user, self.n_negs)  # [B, n]
        alpha = torch.rand(u.shape[0], u.shape[1], device=u.device)
        neg = mix_negatives(u, p, items[candidates], alpha)  # [B, L+1, d]
        u_e, p_e, n_e = u.mean(1), p.mean(1), neg.mean(1)
        bpr = self.mf_loss((u_e * p_e).sum(-1), (u_e * n_e).sum(-1))
        reg = self.reg_weight * l2_loss(u[:, 0], p[:, 0], neg[:, 0], require_pow=self.require_pow)
        return bpr, reg
