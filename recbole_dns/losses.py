"""Small loss functions shared by the models (the DNS loss itself lives in :mod:`recbole_dns.dns`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recbole_dns.shims import cpu_mm


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
    """Mean over rows of ``-log softmax`` of row i against all rows of ``view2`` (cosine / temperature): the
    in-batch InfoNCE of SimGCL, :func:`info_nce_table` with row i of ``view2`` as row i's positive."""
    rows = torch.arange(view1.shape[0], device=view1.device)
    return info_nce_table(view1, view2, rows, temperature) / max(1, view1.shape[0])


#: rows of ``anchor`` per block in :func:`info_nce_table` on the CPU: a block's ``[rows, n]`` scores stay in cache
#: (2,048 x 22,364 scores at once: log-softmax, its backward and a zero fill were 45% of an SGL step); 64 rows is
#: the fastest of 32-256 at SGL's size on amazon-beauty (``benchmarks/bench_info_nce.py``)
INFO_NCE_BLOCK_ROWS = 64


class _LogSumExpOfProducts(torch.autograd.Function):
    """``logsumexp(a @ t.T, dim=1)`` in blocks of rows of ``a``; backward recomputes each block's products,
    so the whole ``[B, n]`` score matrix never exists at once. ``bound``, when given, bounds every score's
    magnitude (normalised rows): where ``exp`` of the scores cannot overflow their sum (``bound + log n``
    below the dtype's largest exponent), the row maxima are not needed, and the backward scales the small
    products (``[rows, d]``) by each row's ``exp(-lse)`` instead of the ``[rows, n]`` scores: one pass over
    the scores each way (``exp``) instead of three."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, t: torch.Tensor, block: int, bound: float | None) -> torch.Tensor:
        direct = bound is not None and bound + math.log(max(1, t.shape[0])) < math.log(torch.finfo(a.dtype).max) - 1
        lse = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
        for s in range(0, a.shape[0], block):
            scores = cpu_mm(a[s : s + block], t.t())
            if direct:
                lse[s : s + block] = scores.exp_().sum(dim=1).log_()
                continue
            top = scores.max(dim=1, keepdim=True).values
            lse[s : s + block] = scores.sub_(top).exp_().sum(dim=1).log_().add_(top.squeeze(1))
        ctx.save_for_backward(a, t, lse)
        ctx.block, ctx.direct = block, direct
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, t, lse = ctx.saved_tensors
        grad_a, grad_t = torch.empty_like(a), torch.zeros_like(t)
        for s in range(0, a.shape[0], ctx.block):
            e = s + ctx.block
            # d lse_i / d score_ij = softmax_ij = exp(score_ij - lse_i)
            if ctx.direct:
                w = (grad[s:e] * torch.exp(-lse[s:e])).unsqueeze(1)
                p = cpu_mm(a[s:e], t.t()).exp_()
                grad_a[s:e] = cpu_mm(p, t).mul_(w)
                grad_t += cpu_mm(p.t(), a[s:e] * w)
                continue
            p = cpu_mm(a[s:e], t.t()).sub_(lse[s:e, None]).exp_().mul_(grad[s:e, None])
            grad_a[s:e] = cpu_mm(p, t)
            grad_t += cpu_mm(p.t(), a[s:e])
        return grad_a, grad_t, None, None


def info_nce_table(
    anchor: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, temperature: float, *,
    block: int | None = None, bounded: bool = True,
) -> torch.Tensor:
    """Sum over i of ``-log softmax`` of ``cos(anchor_i, table_j) / temperature`` over every row j of ``table``,
    at its positive ``j = rows[i]`` (SGL's InfoNCE: each anchor against the whole table).

    The value of RecBole's ``-sum(log(exp(pos / t) / sum(exp(all / t))))`` with ``1 / t`` folded into the
    anchors; on the CPU its log-sum-exp runs over blocks of :data:`INFO_NCE_BLOCK_ROWS` anchors that stay
    in cache (:class:`_LogSumExpOfProducts`), elsewhere over the whole batch at once. It cannot overflow at
    small ``t``, as the exponentials of the original could. ``block`` (rows per block) and ``bounded``
    (``False``: shift every block by its row maxima even where the bound makes it needless) are for
    ``benchmarks/bench_info_nce.py``; the defaults are the fastest measured.
    """
    a = F.normalize(anchor, dim=1) / temperature
    t = F.normalize(table, dim=1)
    if block is None:
        block = INFO_NCE_BLOCK_ROWS if a.device.type == "cpu" else a.shape[0]
    bound = 1 / temperature if bounded else None  # unit rows: |score| <= 1 / temperature
    lse = _LogSumExpOfProducts.apply(a, t, max(1, block), bound)
    return (lse - (a * t[rows]).sum(dim=1)).sum()


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
