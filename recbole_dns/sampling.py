"""Negative-sampling helpers shared by the models: the exclusion matrix and rejection sampling on a device."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch


def exclusion_matrix(dataset: Any) -> sp.csr_matrix:
    """``[n_users, n_items]`` CSR of the items a user may not get: training positives and item 0."""
    inter = dataset.inter_matrix(form="csr").astype(np.float32)
    rows = np.arange(inter.shape[0])
    pad = sp.csr_matrix((np.ones(inter.shape[0], dtype=np.float32), (rows, np.zeros_like(rows))), shape=inter.shape)
    out = (inter + pad).tocsr()
    out.data[:] = 1.0
    return out


#: :class:`ExclusionIndex` keeps a bitmap of the excluded pairs up to this size (MiB; gowalla's and yelp2018's
#: catalogues take about 150), sorted keys above it
BITMAP_MAX_MB = 256


class ExclusionIndex:
    """Vectorised test of ``(user, item)`` against an exclusion matrix, on the model's device.

    A pair's key is ``user * n_items + item``. Where one bit per user-item pair fits ``bitmap_mb`` MiB, the
    keys are bits of a packed bitmap and a lookup is one gather (7x faster than the search on amazon-beauty's
    22,364 x 12,102, 32 MiB); otherwise the keys are kept sorted and looked up with ``torch.searchsorted``.
    :meth:`sample` draws negatives by rejection.
    """

    def __init__(self, exclude: sp.csr_matrix, device: torch.device | str = "cpu",
                 bitmap_mb: float = BITMAP_MAX_MB) -> None:
        coo = sp.csr_matrix(exclude).tocoo()
        self.n_users, self.n_items = coo.shape
        keys = np.unique(coo.row.astype(np.int64) * self.n_items + coo.col.astype(np.int64))
        self.device = torch.device(device)
        self.exclude = sp.csr_matrix(exclude)
        self.bits = self.keys = None  # one of the two, whichever :meth:`contains` searches
        n_bytes = -(-self.n_users * self.n_items // 8)
        if n_bytes <= bitmap_mb * 2**20:
            bits = np.zeros(n_bytes, dtype=np.uint8)
            if len(keys):  # the keys are sorted and unique: OR the bits of each byte's keys together
                byte = keys >> 3
                first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
                bits[byte[first]] = np.bitwise_or.reduceat((1 << (keys & 7)).astype(np.uint8), first)
            self.bits = torch.as_tensor(bits, device=device)
        else:
            self.keys = torch.as_tensor(keys, device=device)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor: whether each ``(users, items)`` pair (broadcast) is excluded."""
        query = (users.to(self.device) * self.n_items + items.to(self.device)).contiguous()
        if self.bits is not None:
            return ((self.bits[query >> 3] >> (query & 7).to(torch.uint8)) & 1).bool()
        pos = torch.searchsorted(self.keys, query).clamp_max(max(len(self.keys) - 1, 0))
        return self.keys[pos] == query if len(self.keys) else torch.zeros_like(query, dtype=torch.bool)

    def sample(
        self,
        users: torch.Tensor,
        m: int,
        draw: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        exact: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_rounds: int = 100,
    ) -> torch.Tensor:
        """``[B, m]`` items not excluded for their user, by rejection.

        ``draw(rows, cols)`` proposes one item for each position ``(rows[i], cols[i])`` of the output
        (default: uniform over ``1..n_items-1``); excluded draws are redrawn, so the result follows the
        proposal restricted to the user's allowed items. Positions still excluded after ``max_rounds``
        (users who have seen almost everything) are drawn exactly from ``exact(user_ids) -> [U, n_items]``
        probabilities (default: uniform over the allowed items).
        """
        device = self.device
        users = users.to(device)
        if draw is None:
            def draw(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
                return torch.randint(1, self.n_items, rows.shape, device=device)

            out = torch.randint(1, self.n_items, (len(users), m), device=device)  # the draws of rows x cols below
        else:
            rows = torch.arange(len(users), device=device).repeat_interleave(m)
            cols = torch.arange(m, device=device).repeat(len(users))
            out = draw(rows, cols).view(len(users), m)
        todo = self.contains(users.unsqueeze(1), out)
        for _ in range(max_rounds):
            if not bool(todo.any()):
                return out
            r, c = torch.nonzero(todo, as_tuple=True)
            out[r, c] = draw(r, c)
            todo[r, c] = self.contains(users[r], out[r, c])
        r, c = torch.nonzero(todo, as_tuple=True)
        if len(r):
            out[r, c] = self._exact(users[r], exact)
        return out

    def allowed_mask(self, users: torch.Tensor) -> torch.Tensor:
        """``[U, n_items]`` bool: the items each user may get (dense; for small sets of users)."""
        rows = self.exclude[users.cpu().numpy()].toarray() == 0
        return torch.as_tensor(rows, device=self.device)

    def _exact(self, users: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        probs = exact(users) if exact is not None else self.allowed_mask(users).float()
        if bool((probs.sum(1) <= 0).any()):
            raise ValueError("a user has no item left to sample (every item is excluded)")
        return torch.multinomial(probs, 1).squeeze(1)
