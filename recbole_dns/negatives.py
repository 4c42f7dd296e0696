"""Hard negatives for any pairwise model: DNS(M,N) and AHNS pick the static negative ``i-`` of every training
instance from ``hard_neg_m`` uniform candidates, scored with the model's current tables.

* ``dns_mn``: Shi et al., "On the Theories Behind Hard Negative Sampling for Recommendation", WWW 2023:
  one of the ``hard_neg_n`` highest-scored of the ``M`` candidates, uniformly (``N = 1``: the hardest,
  Zhang et al. 2013, what RecBole's ``dynamic: True`` does through ``predict``).
* ``ahns``: Lai et al., "Adaptive Hardness Negative Sampling for Collaborative Filtering", AAAI 2024: the
  candidate whose score is closest to ``beta * (s(u, i+) + alpha) ** (p + 1)``, a target that falls as the
  positive's score rises (``p < -1``).

The candidates are uniform over the items a user has not interacted with in training; the scores are the
inner products of the tables the model is trained on (no gradient). A model gets the option with
``hard_neg: dns_mn | ahns`` (:func:`with_hard_negatives` wraps its class), whatever its loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_dns.errors import ConfigError
from recbole_dns.sampling import ExclusionIndex, exclusion_matrix

#: ``hard_neg``: none (the negative RecBole's sampler gave) | dns_mn | ahns
HARD_NEGATIVES = ("none", "dns_mn", "ahns")


def dns_mn_pick(cand_scores: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B]`` column of each row of ``cand_scores [B, M]``: one of its ``n`` highest, uniformly."""
    top = torch.topk(cand_scores, min(n, cand_scores.shape[1]), dim=1).indices
    pick = torch.randint(0, top.shape[1], (len(top), 1), device=top.device, generator=generator)
    return top.gather(1, pick).squeeze(1)


def ahns_pick(pos_scores: torch.Tensor, cand_scores: torch.Tensor, alpha: float, beta: float, p: float) -> torch.Tensor:
    """``[B]`` column of each row of ``cand_scores [B, M]`` closest to ``beta * (pos_scores + alpha) ** (p + 1)``.

    A target that is not a number (a negative base with a fractional power) makes every distance infinite:
    the row's first candidate, a uniform draw, is kept.
    """
    target = beta * (pos_scores + alpha).pow(p + 1)
    dist = (cand_scores - target.unsqueeze(1)).abs().nan_to_num(nan=float("inf"))
    return dist.argmin(dim=1)


#: ``hard_neg_m: auto``: (training-interaction density at or above which the catalogue counts as dense, M there, M
#: elsewhere). The hardness that pays differs by data (docs/results.md, section 17): on dense ml-100k (5% of the
#: user-item pairs in training) the hardest of 4 is +9.5% over tuned BPR and the hardest of 64 -19%; on sparse
#: amazon-beauty and gowalla (< 0.1%) the hardest of 64 wins (sections 15-16). No catalogue between was measured.
AUTO_M = (0.01, 4, 64)


def resolve_hard_neg_m(value: Any, dataset: Any) -> int:
    """``hard_neg_m`` as a count: an integer as it is; ``auto`` from the training split's density (:data:`AUTO_M`)."""
    if value != "auto":
        return int(value)
    dense_at, dense_m, sparse_m = AUTO_M
    density = dataset.inter_num / max(1, (dataset.user_num - 1) * (dataset.item_num - 1))  # id 0 is padding
    return dense_m if density >= dense_at else sparse_m


#: bytes of candidate embeddings gathered at once on the CPU: blocks that stay in cache are 3-6x faster to score
#: than one ``[B, M, d]`` gather (2048 x 64 candidates of 64 floats: 26 ms against 105 ms on one core)
CPU_BLOCK_BYTES = 2**19


def candidate_scores(user_e: torch.Tensor, item_table: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` inner products of each user row ``user_e [B, d]`` with its candidates' rows of ``item_table``
    (``candidates [B, M]``); on the CPU in blocks of rows whose gathered embeddings fit ``CPU_BLOCK_BYTES``."""
    n, m = candidates.shape
    if user_e.device.type != "cpu":
        return torch.bmm(F.embedding(candidates, item_table), user_e.unsqueeze(2)).squeeze(2)
    out = torch.empty(n, m, dtype=user_e.dtype)
    rows = max(1, CPU_BLOCK_BYTES // max(1, m * item_table.shape[1] * item_table.element_size()))
    for s in range(0, n, rows):
        torch.bmm(F.embedding(candidates[s:s + rows], item_table), user_e[s:s + rows].unsqueeze(2),
                  out=out[s:s + rows].unsqueeze(2))
    return out


def scoring_tables(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(users, items)``: the tables a model's scores are inner products of (a DNS variant's ``train_tables``,
    a model's ``score_tables()``, BPR's ``user_table``/``item_table``, or a graph model's ``forward()``)."""
    if hasattr(model, "train_tables"):
        return model.train_tables()
    if hasattr(model, "score_tables"):
        return model.score_tables()
    if hasattr(model, "user_table") and hasattr(model, "item_table"):
        return model.user_table(), model.item_table()
    params = inspect.signature(model.forward).parameters.values()
    # a forward that needs arguments (SGL's takes its graph) cannot give the tables by itself
    needs_args = any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    out = None if needs_args else model.forward()
    if isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out):
        return out
    raise ConfigError(
        f"hard_neg needs {type(model).__name__}'s score tables: define score_tables() returning (users, items)"
    )


class HardNegatives:
    """Mixin: before the model's own ``calculate_loss``, replace the batch's negative with a hard one.

    The scores are inner products of :func:`scoring_tables` (a model without tables of its own defines ``score_tables()``).
    A graph model whose ``forward()`` gives those tables (``tables_from_forward``: LightGCN, SimGCL and their DNS
    variants) propagates once per step: the pick scores the detached tables the loss then trains on.
    """

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.hard_neg = str(config["hard_neg"])
        self.hard_neg_m = resolve_hard_neg_m(config["hard_neg_m"], dataset)
        self.hard_neg_n = int(config["hard_neg_n"])
        self.ahns_alpha = float(config["ahns_alpha"])
        self.ahns_beta = float(config["ahns_beta"])
        self.ahns_p = float(config["ahns_p"])
        self.hard_neg_index = ExclusionIndex(exclusion_matrix(dataset), config["device"])

    def hard_neg_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return scoring_tables(self)

    @torch.no_grad()
    def hard_negatives(self, users: torch.Tensor, pos_items: torch.Tensor,
                       tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B]``: each instance's negative, picked from ``hard_neg_m`` uniform candidates, scored with ``tables``
        (default: :meth:`hard_neg_tables`)."""
        candidates = self.hard_neg_index.sample(users, self.hard_neg_m)  # [B, M]
        user_table, item_table = tables if tables is not None else self.hard_neg_tables()
        user_e = user_table[users]
        cand_scores = candidate_scores(user_e, item_table, candidates)  # [B, M]
        if self.hard_neg == "dns_mn":
            col = dns_mn_pick(cand_scores, self.hard_neg_n)
        else:
            pos_scores = (user_e * item_table[pos_items]).sum(-1)
            col = ahns_pick(pos_scores, cand_scores, self.ahns_alpha, self.ahns_beta, self.ahns_p)
        return candidates.gather(1, col.unsqueeze(1)).squeeze(1)

    def calculate_loss(self, interaction: Any) -> Any:
        if not self.training or self.hard_neg == "none":
            return super().calculate_loss(interaction)
        users, pos = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if not getattr(self, "tables_from_forward", False):
            interaction[self.NEG_ITEM_ID] = self.hard_negatives(users, pos).to(users.device)
            return super().calculate_loss(interaction)
        # a graph model: propagate once, with gradient; the pick scores the detached tables, the loss reuses them
        tables = self.forward()
        interaction[self.NEG_ITEM_ID] = self.hard_negatives(users, pos, tuple(t.detach() for t in tables)).to(users.device)
        with forward_returns(self, tables):
            return super().calculate_loss(interaction)


@contextmanager
def forward_returns(model: torch.nn.Module, tables: tuple[torch.Tensor, torch.Tensor]) -> Iterator[None]:
    """Inside the block ``model.forward()`` (no arguments, or only false ones such as SimGCL's
    ``perturbed=False``) returns ``tables`` instead of propagating again; other calls run the model's own."""
    method = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        return tables if not args and not any(kwargs.values()) else method(*args, **kwargs)

    model.__dict__["forward"] = forward
    try:
        yield
    finally:
        del model.__dict__["forward"]


def with_hard_negatives(model_class: type) -> type:
    """``model_class`` with :class:`HardNegatives` mixed in (same name, so configs and logs are unchanged)."""
    if issubclass(model_class, HardNegatives):
        return model_class
    if getattr(model_class, "input_type", None) is not InputType.PAIRWISE:
        raise ConfigError(
            f"hard_neg applies to pairwise models (input_type PAIRWISE, a negative per instance); "
            f"{model_class.__name__} is not one"
        )
    if getattr(model_class, "own_negatives", False):
        raise ConfigError(
            f"hard_neg does not apply to {model_class.__name__}, which draws its own negatives (n_negs); "
            "use it with BPR, LightGCN, SGL, SimGCL or their _DNS variants"
        )
    return type(model_class.__name__, (HardNegatives, model_class),
                {"__module__": model_class.__module__, "__doc__": model_class.__doc__})
