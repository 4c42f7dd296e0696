"""The DNS loss (Eq. 5 of the paper): ``-log f(u,i+) / (f(u,i-) + f(u,i'-) + f(u,i+))``, ``f = exp(cos/tau)``."""

from __future__ import annotations

import torch

#: ``dns_similarity``: the similarity in f = exp(sim / tau)
SIMILARITIES = ("cosine", "dot")

def dns_loss(
    user_e: torch.Tensor,
    pos_e: torch.Tensor,
    neg_e: torch.Tensor,
    dns_neg_e: torch.Tensor,
    tau: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Batch mean (or sum) of Eq. 5: ``-log f(u,i+) / (f(u,i-) + f(u,i'-) + f(u,i+))``, ``f = exp(cos/tau)``.

    ``user_e``/``pos_e`` are ``[B, d]``; ``neg_e`` and ``dns_neg_e`` are ``[B, d]`` or ``[B, m, d]``
    (several negatives per instance). Computed with ``logsumexp``: finite for small ``tau`` and for
    zero vectors (whose cosine is taken as 0).
    """
    candidates = torch.cat([_as_rows(pos_e), _as_rows(neg_e), _as_rows(dns_neg_e)], dim=0)  # [K, B, d]
    return stacked_dns_loss(user_e, candidates, tau, reduction)


_COS_EPS = 1e-8


def _as_rows(e: torch.Tensor) -> torch.Tensor:
    """``[B, d] -> [1, B, d]``; ``[B, m, d] -> [m, B, d]``."""
    return e.unsqueeze(0) if e.dim() == 2 else e.transpose(0, 1)


def cosine_parts(user_e: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[K, B]`` cosine of each user ``[B, d]`` with its ``K`` candidate items ``[K, B, d]``, and the squared
    row norms it used: ``[B]`` of the users, ``[K, B]`` of the items (an L2 term can reuse them,
    :meth:`~recbole_dns.dns.DNSBatch.l2`).

    Dot products times the inverse norms (clamped at 1e-8, so a zero vector has cosine 0): on the
    backward pass this is cheaper than normalising the rows first, and on the CPU an elementwise
    product and sum beats ``bmm`` for these shapes.
    """
    dot = (candidates * user_e).sum(-1)
    user_sq = (user_e * user_e).sum(-1)
    cand_sq = (candidates * candidates).sum(-1)
    return dot * user_sq.clamp_min(_COS_EPS**2).rsqrt() * cand_sq.clamp_min(_COS_EPS**2).rsqrt(), user_sq, cand_sq


def cosine(user_e: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[K, B]`` cosine of each user ``[B, d]`` with its ``K`` candidate items ``[K, B, d]`` (:func:`cosine_parts`)."""
    return cosine_parts(user_e, candidates)[0]


def dns_logits_parts(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str = "cosine"
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`dns_logits` and, for the cosine, the squared row norms of :func:`cosine_parts` (else ``None``)."""
    if similarity == "cosine":
        cos, user_sq, cand_sq = cosine_parts(user_e, candidates)
        return cos / tau, user_sq, cand_sq
    if similarity == "dot":
        return (candidates * user_e).sum(-1) / tau, None, None
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {similarity!r}")


def dns_logits(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str = "cosine") -> torch.Tensor:
    """``[K, B]`` similarity / tau of each user ``[B, d]`` with its candidates ``[K, B, d]``."""
    return dns_logits_parts(user_e, candidates, tau, similarity)[0]


def loss_from_logits(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-log softmax`` of row 0 of ``[K, B]`` logits (the positive first), reduced over the batch."""
    losses = torch.logsumexp(logits, dim=0) - logits[0]
    return losses.mean() if reduction == "mean" else losses.sum()


def dns_loss_parts(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, similarity: str = "cosine",
                   reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A batch's loss and what it computed on the way: ``(loss, logits [K, B], user_sq [B], items_sq [K, B])``
    (:func:`loss_from_logits` of :func:`dns_logits_parts`; the squared norms ``None`` for ``dot``). The model
    calls it through :mod:`~recbole_dns.dns.compiled`, which may compile it into one fused kernel."""
    logits, user_sq, items_sq = dns_logits_parts(user_e, candidates, tau, similarity)
    return loss_from_logits(logits, reduction), logits, user_sq, items_sq


def stacked_dns_loss(user_e: torch.Tensor, candidates: torch.Tensor, tau: float, reduction: str = "mean",
                     similarity: str = "cosine") -> torch.Tensor:
    """:func:`dns_loss` with the items stacked as ``[K, B, d]``, the positive first."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum; got {reduction!r}")
    return dns_loss_parts(user_e, candidates, tau, similarity, reduction)[0]
