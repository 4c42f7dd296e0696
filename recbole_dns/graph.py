"""Graph propagation for the LightGCN-family models: a symmetric sparse adjacency in CSR form."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: the backward is ``adj @ grad`` (no transpose).

    torch's own backward of ``torch.sparse.mm`` transposes and re-coalesces the COO matrix on every
    call; with a symmetric CSR adjacency this is 2.5x faster per propagation on the CPU.
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adj, grad)


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation ``adj @ x`` with a symmetric sparse ``adj`` (gradient to ``x`` only)."""
    return _SymmetricSpMM.apply(adj, x)


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the layers' embeddings, ``torch.stack(layers, dim=1).mean(dim=1)`` without stacking them: a
    running sum (the stacked copy and the backward's ``[n, L+1, d]`` division cost 3x as long on the CPU)."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


def to_csr(adj: torch.Tensor) -> torch.Tensor:
    """A sparse COO matrix as CSR (faster ``sparse.mm``)."""
    return adj.coalesce().to_sparse_csr()


def symmetric_norm_adjacency(inter: sp.spmatrix, device: torch.device | str | None = None) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item bipartite graph as a coalesced torch sparse COO tensor.

    Replaces RecBole 1.2.1's ``get_norm_adj_mat`` (LightGCN, SGL, NGCF, ...), which fills a
    ``dok_matrix`` through ``dok_matrix._update`` (removed in SciPy 1.13) and builds the tensor with
    ``torch.sparse.FloatTensor`` (deprecated in torch 2.x). Built from COO here, which is faster too.
    """
    inter = sp.coo_matrix(inter, dtype=np.float32)
    n_users, n_items = inter.shape
    row = np.concatenate([inter.row, inter.col + n_users])
    col = np.concatenate([inter.col + n_users, inter.row])
    data = np.ones(len(row), dtype=np.float32)
    adj = sp.coo_matrix((data, (row, col)), shape=(n_users + n_items,) * 2)
    adj.sum_duplicates()
    adj.data[:] = 1.0
    deg = np.asarray(adj.sum(axis=1)).flatten() + 1e-7  # RecBole adds 1e-7 to avoid 0^-1/2
    d_inv = np.power(deg, -0.5)
    values = d_inv[adj.row] * adj.data * d_inv[adj.col]
    index = torch.as_tensor(np.vstack([adj.row, adj.col]).astype(np.int64))
    out = torch.sparse_coo_tensor(index, torch.as_tensor(values, dtype=torch.float32), adj.shape, check_invariants=True)
    return out.coalesce().to(device) if device is not None else out.coalesce()
