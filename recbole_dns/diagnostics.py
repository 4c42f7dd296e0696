"""Training diagnostics of the paper: the false-negative rate of sampled negatives and the entropy of Eq. 6.

Both can be logged during any training run (``log_fn_rate: true``, ``log_entropy: true``): the trainer
then reports them after every epoch to the log and to RecBole's TensorBoard folder, and keeps them in
``trainer.monitor.history``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recbole_dns.sampling import ExclusionIndex


def row_entropy(emb: torch.Tensor) -> torch.Tensor:
    """``[n]``: the entropy of ``softmax`` over each row's ``d`` coordinates."""
    logp = torch.log_softmax(emb.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def embedding_entropy(user_emb: torch.Tensor, item_emb: torch.Tensor) -> float:
    """Eq. 6 of the paper: ``H = -sum(softmax(concat(E_u, E_i)) * log softmax(concat(E_u, E_i))) / d``.

    The paper leaves the softmax axis open. Read here: ``concat`` stacks the user rows and the item rows
    (``[n_u + n_i, d]``), the softmax normalises each row over its ``d`` latent coordinates (each embedding
    becomes a distribution over the dimensions), the sum runs over all rows and coordinates, and ``d`` is
    the width. ``item_emb`` may repeat an item (one row per training instance that drew it).
    """
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"user_emb and item_emb must be 2-D of one width; got {tuple(user_emb.shape)}, {tuple(item_emb.shape)}")
    d = user_emb.shape[1]
    return float((row_entropy(user_emb).sum() + row_entropy(item_emb).sum()) / d)


def positives_matrix(eval_data: Any) -> sp.csr_matrix:
    """``[n_users, n_items]`` CSR of each user's held-out items of a RecBole full-sort eval loader."""
    n_users, n_items = eval_data._dataset.user_num, eval_data._dataset.item_num
    rows, cols = [], []
    for u in np.asarray(eval_data.uid_list):
        items = np.asarray(eval_data.uid2positive_item[int(u)])
        rows.append(np.full(len(items), int(u)))
        cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


def expected_static_fn_rate(train_dataset: Any, test_positives: sp.csr_matrix) -> float:
    """What RecBole's uniform static sampler's false-negative rate should be, from the split alone.

    Mean over training instances ``(u, i)`` of ``|test items of u| / |items u may be sampled from|``, where a
    user may be sampled any item but the padding item 0 and its training positives.
    """
    train = train_dataset.inter_matrix(form="csr")
    train.data[:] = 1.0
    n_items = train.shape[1]
    per_user_instances = np.asarray(train.sum(axis=1)).ravel()
    train_len = np.asarray((train > 0).sum(axis=1)).ravel()
    test_len = np.asarray(test_positives.sum(axis=1)).ravel()
    rate = test_len / np.maximum(n_items - 1 - train_len, 1)
    return float((per_user_instances * rate).sum() / per_user_instances.sum())


def tables_of(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The user and item tables a model scores with: a DNS model's ``dns_tables()``; for a base model with
    a registered DNS variant, the variant's ``train_tables``; else its ``user_embedding``/``item_embedding``."""
    from recbole_dns import models

    if hasattr(model, "dns_tables"):
        return model.dns_tables()
    variant = models.DNS_VARIANTS.get(type(model).__name__)
    if variant is not None:
        return models.get_model(variant).train_tables(model)
    return model.user_embedding.weight, model.item_embedding.weight


class TrainingMonitor:
    """Counts, per epoch, how many sampled negatives are test items of their user (false negatives), for
    the static negative ``i-`` and the contrastive negative ``i'-`` apart, and computes Eq. 6's entropy of
    the users and the epoch's negatives (the contrastive ones for a DNS model, the static ones otherwise)."""

    def __init__(self, test_positives: sp.csr_matrix | None, entropy: bool, device: torch.device | str = "cpu",
                 grad_share: bool = False) -> None:
        self.index = ExclusionIndex(test_positives, device) if test_positives is not None else None
        self.entropy = bool(entropy)
        self.grad_share = bool(grad_share)
        self.history: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self.counts = {"static": [0, 0], "dns": [0, 0]}  # [false negatives, instances]
        self.negatives = {"static": [], "dns": []}
        self.shares: list[torch.Tensor] = []

    def observe(self, kind: str, users: torch.Tensor, negatives: torch.Tensor) -> None:
        """Record one batch of negatives of ``kind`` (``static`` or ``dns``; ``[B]`` or ``[B, m]``)."""
        if negatives.dim() == 2:
            users = users.unsqueeze(1).expand_as(negatives)
        if self.index is not None:
            hit = self.index.contains(users.detach(), negatives.detach())
            self.counts[kind][0] += int(hit.sum())
            self.counts[kind][1] += hit.numel()
        if self.entropy:
            self.negatives[kind].append(negatives.detach().flatten().cpu())

    def observe_dns_batch(self, batch: Any) -> None:
        """A DNS model's batch: its contrastive negatives and, with ``grad_share``, the share of the
        negatives' softmax weight that they carry (the gradient through each negative is proportional to it)."""
        self.observe("dns", batch.users, batch.dns_neg_items)
        if self.grad_share and batch.logits is not None:
            weights = torch.softmax(batch.logits.float(), dim=0)[1:]  # negatives only, [K-1, B]
            n_static = 1 if batch.keep_static else 0
            self.shares.append((weights[n_static:].sum(0) / weights.sum(0).clamp_min(1e-30)).detach().cpu())

    @torch.no_grad()
    def end_epoch(self, epoch: int, model: Any) -> dict[str, float]:
        """The epoch's figures (also appended to :attr:`history`); starts counting the next epoch."""
        row: dict[str, float] = {"epoch": epoch}
        for kind, (fn, n) in self.counts.items():
            if self.index is not None and n:
                row[f"fn_rate_{kind}"] = fn / n
        if self.shares:
            row["grad_share_dns"] = float(torch.cat(self.shares).mean())
        if self.entropy:
            kind = "dns" if self.negatives["dns"] else "static"
            if self.negatives[kind]:
                users, items = tables_of(model)
                counts = torch.bincount(torch.cat(self.negatives[kind]), minlength=items.shape[0]).to(items.device)
                total = row_entropy(users).sum() + (counts * row_entropy(items)).sum()
                row["entropy"] = float(total / users.shape[1])
        self.history.append(row)
        self._reset()
        return row

    def mean_fn_rates(self) -> dict[str, float]:
        """False-negative rates averaged over training (each epoch weighs as much as its instances)."""
        return {k: float(np.mean([r[k] for r in self.history if k in r])) for k in ("fn_rate_static", "fn_rate_dns")
                if any(k in r for r in self.history)}
