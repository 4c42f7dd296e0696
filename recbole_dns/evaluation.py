"""Per-user evaluation under both protocols: RecBole's full ranking and the paper's sampled test sets.

* :func:`full_ranking` runs RecBole's own evaluation and keeps each user's metric values (RecBole only
  reports their mean): the ``rec.topk`` matrix RecBole collects is turned into per-user values with
  RecBole's own metric formulas, so the per-user vector averages to RecBole's reported metric.
* :class:`SampledTestSets` is the paper's protocol (Section 4.2): ``T`` test sets, each ranking every
  test user's held-out items against ``N`` negatives sampled **once** from the set's own seed among the
  items the user never interacted with (train, valid or test). The same sets serve every model and every
  call; RecBole's ``uniN`` mode redraws its negatives from the global RNG at every evaluation instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

#: metric name (RecBole's, lower case) -> RecBole metric class name
METRIC_CLASSES = {"ndcg": "NDCG", "recall": "Recall", "map": "MAP"}
METRICS = tuple(METRIC_CLASSES)


@dataclass
class PerUser:
    """Metric values per user: ``values[metric]`` is aligned with ``users`` (RecBole's internal user ids)."""

    users: np.ndarray
    values: dict[str, np.ndarray]

    def mean(self) -> dict[str, float]:
        return {m: float(v.mean()) for m, v in self.values.items()}


def per_user_metrics(pos_index: np.ndarray, pos_len: np.ndarray, config: Any, k: int = 10,
                     metrics: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
    """Each user's metric@k from a ``[U, >=k]`` hit matrix of the ranked list and the number of relevant items,
    with RecBole's own formulas (``metric_info`` of its metric classes)."""
    from recbole.evaluator import metrics as recbole_metrics

    pos_index = np.asarray(pos_index, dtype=bool)[:, :k]
    pos_len = np.asarray(pos_len, dtype=np.int64)
    out = {}
    for name in metrics:
        metric = getattr(recbole_metrics, METRIC_CLASSES[name])(config)
        out[name] = metric.metric_info(pos_index, pos_len)[:, k - 1].astype(np.float64)
    return out


def full_ranking(trainer: Any, eval_data: Any, k: int = 10, metrics: tuple[str, ...] = METRICS) -> tuple[dict, PerUser]:
    """RecBole's full-ranking evaluation of ``trainer.model`` (as it is now) and its per-user values.

    Returns RecBole's result dict and a :class:`PerUser` whose means equal RecBole's ``metric@k``.
    """
    captured = {}
    evaluator = trainer.evaluator
    original = evaluator.evaluate

    def capture(struct):
        captured["topk"] = struct.get("rec.topk").numpy()
        return original(struct)

    evaluator.evaluate = capture
    try:
        result = trainer.evaluate(eval_data, load_best_model=False)
    finally:
        del evaluator.evaluate  # back to the class's method
    topk = captured["topk"]
    values = per_user_metrics(topk[:, :-1], topk[:, -1], trainer.config, k, metrics)
    return result, PerUser(np.asarray(eval_data.uid_list), values)


class SampledTestSets:
    """The paper's sampled protocol: ``n_sets`` test sets of ``n_negatives`` sampled negatives per test user.

    Set ``t`` draws its negatives with its own torch generator seeded ``seed + t``, uniformly and without
    repetition among the items the user never interacted with (train, valid or test), once, when the object
    is built; :meth:`evaluate` then ranks each user's test items against that set's negatives.
    """

    def __init__(self, test_data: Any, n_sets: int = 10, n_negatives: int = 100, seed: int = 0) -> None:
        if n_sets < 1 or n_negatives < 1:
            raise ValueError(f"n_sets and n_negatives must be >= 1; got {n_sets}, {n_negatives}")
        self.n_sets, self.n_negatives, self.seed = int(n_sets), int(n_negatives), int(seed)
        self.users = torch.as_tensor(np.asarray(test_data.uid_list), dtype=torch.long)
        n_items = test_data._dataset.item_num
        positives = [torch.as_tensor(test_data.uid2positive_item[int(u)]) for u in self.users]
        history = [torch.as_tensor(test_data.uid2history_item[int(u)]) for u in self.users]
        self.pos_len = torch.tensor([len(p) for p in positives])
        width = int(self.pos_len.max())
        self.positives = torch.zeros((len(self.users), width), dtype=torch.long)  # padded with item 0
        for row, p in enumerate(positives):
            self.positives[row, : len(p)] = p
        rows = np.concatenate([np.full(len(p) + len(h) + 1, r) for r, (p, h) in enumerate(zip(positives, history))])
        cols = np.concatenate([np.concatenate([[0], p.numpy(), h.numpy()]) for p, h in zip(positives, history)])
        exclude = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(self.users), n_items))
        self.negatives = [
            self._draw(exclude, torch.Generator().manual_seed(self.seed + t)) for t in range(self.n_sets)
        ]

    def _draw(self, exclude: sp.csr_matrix, generator: torch.Generator) -> torch.Tensor:
        from recbole_dns.dns import sample_distinct

        return sample_distinct(exclude, self.n_negatives, generator=generator)

    @torch.no_grad()
    def evaluate(self, model: Any, config: Any, k: int = 10, metrics: tuple[str, ...] = METRICS,
                 batch_users: int = 1024) -> list[PerUser]:
        """Per-user metric@k of ``model`` on each test set (the model's own ``full_sort_predict`` scores)."""
        from recbole.data.interaction import Interaction

        model.eval()
        device = next(model.parameters()).device
        width = self.positives.shape[1]
        pad = torch.arange(width).unsqueeze(0) >= self.pos_len.unsqueeze(1)  # [U, width]
        hits = [[] for _ in range(self.n_sets)]
        for start in range(0, len(self.users), batch_users):
            end = min(start + batch_users, len(self.users))
            users = self.users[start:end]
            scores = model.full_sort_predict(Interaction({model.USER_ID: users.to(device)})).view(len(users), -1).cpu()
            pos_scores = scores.gather(1, self.positives[start:end]).masked_fill(pad[start:end], -torch.inf)
            for t in range(self.n_sets):
                cand = torch.cat([pos_scores, scores.gather(1, self.negatives[t][start:end])], dim=1)
                top = torch.topk(cand, min(k, cand.shape[1]), dim=1).indices
                real = ~pad[start:end].gather(1, top.clamp_max(width - 1))  # a padding slot is never a hit
                hits[t].append(((top < width) & real).numpy())
        out = []
        for t in range(self.n_sets):
            pos_index = np.concatenate(hits[t])
            if pos_index.shape[1] < k:  # fewer candidates than k: pad the ranked list with misses
                pos_index = np.pad(pos_index, ((0, 0), (0, k - pos_index.shape[1])))
            out.append(PerUser(self.users.numpy(), per_user_metrics(pos_index, self.pos_len.numpy(), config, k, metrics)))
        return out
