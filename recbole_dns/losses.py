"""Small loss functions shared by the models (the DNS loss itself lives in :mod:`recbole_dns.dns`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2_loss(*embeddings: torch.Tensor, require_pow: bool = False) -> torch.Tensor:
    """The L2 term of a batch, as RecBole's ``EmbLoss`` computes it, per training instance.

    ``require_pow: false`` (RecBole's default): the sum of the embedding tensors' Frobenius norms;
    ``require_pow: true``: the sum of their squared norms, halved, which is the ``lambda * ||theta||^2``
    of the BPR, LightGCN, MixGCF and DNS papers. Either is divided by the number of training instances,
    the rows of the first tensor (the users; a ``[B * m, d]`` tensor of ``m`` negatives per instance
    then counts as the same ``B`` instances, where ``EmbLoss`` would divide by ``B * m``).
    """
    batch = embeddings[0].shape[0]
    if require_pow:
        total = sum(e.pow(2).sum() for e in embeddings) / 2
    else:
        total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / batch


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of ``-log softmax`` of row i against all rows of ``view2`` (cosine / temperature)."""
    v1, v2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = v1 @ v2.t() / temperature
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


class EgoL2Mixin:
    """``ego_loss``: the L2 term on the layer-0 (ego) embeddings of a batch, as RecBole's LightGCN and SGL.

    For models with ``user_embedding``/``item_embedding`` tables, ``reg_weight`` and ``require_pow``.
    """

    reg_weight: float
    require_pow: bool

    def ego_loss(self, user: torch.Tensor, *items: torch.Tensor) -> torch.Tensor:
        """``reg_weight`` x :func:`l2_loss` of the users' and the given item columns' ego embeddings."""
        ego = [self.user_embedding(user), *(self.item_embedding(i) for i in items)]
        return self.reg_weight * l2_loss(*ego, require_pow=self.require_pow)
