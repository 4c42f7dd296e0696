"""Compatibility shims for RecBole 1.2.1 on today's torch / SciPy / numpy.

Every work-around for a library version lives here, each with the version it is for.
"""

from __future__ import annotations

import enum
import os
import uuid
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


# RecBole 1.2.1 under pandas 2.2+: Dataset._fill_nan calls column.fillna(inplace=True), which pandas
# flags as chained assignment (it still fills under pandas < 3, which we pin). torch 2.4+ deprecates
# torch.cuda.amp.GradScaler, which RecBole's Trainer._train_epoch builds every epoch.
def silence_known_warnings() -> None:
    warnings.filterwarnings("ignore", message="A value is trying to be set on a copy", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`torch.cuda.amp.GradScaler", category=FutureWarning)
    # torch 2.x: "Sparse CSR tensor support is in beta state" on every CSR adjacency we build
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


silence_known_warnings()


# SciPy >= 1.13 removed dok_matrix._update, which RecBole 1.2.1's NGCF, NCL, GCMC and SpectralCF call
# to fill their adjacency (this package's LightGCN and SGL build theirs from COO instead). Restore the
# old, unchecked dict update so those built-in models start.
def restore_dok_update() -> None:
    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


restore_dok_update()


# torch >= 2.6 loads with weights_only=True by default, and RecBole 1.2.1 pickles its whole Config
# into every checkpoint (trainer.py:300), so its own torch.load calls fail (trainer.py:323, 583).
# Our checkpoints hold only tensors and plain Python types and are read back with weights_only=True.
def to_plain(obj: Any) -> Any:
    """Convert ``obj`` to tensors and plain Python types only (safe for ``weights_only`` loading)."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = [to_plain(v) for v in obj]
        return tuple(seq) if isinstance(obj, tuple) else seq
    return str(obj)


def config_to_dict(config: Any) -> dict:
    """A RecBole Config as a plain dict (what we store instead of the pickled Config object)."""
    final = getattr(config, "final_config_dict", config)
    return to_plain(dict(final))


def save_checkpoint(state: dict, path: str) -> None:
    """Save a checkpoint made of tensors and plain types (checked by :func:`to_plain`)."""
    torch.save(to_plain(state), path)


def load_checkpoint(path: str, device: torch.device | str | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError from a RecBole-native checkpoint
        raise ValueError(
            f"cannot load checkpoint {path!r} with weights_only=True ({err.__class__.__name__}). "
            "recbole_dns only reads checkpoints it wrote itself (tensors and plain types); "
            "a checkpoint written by plain RecBole pickles its Config and is not loaded."
        ) from None


def unique_checkpoint_name(model_name: str, local_time: str) -> str:
    """``<model>-<time>-<pid>-<random>.pth``: RecBole 1.2.1 names files ``<model>-<time>.pth``,
    which collides when two runs start in the same second (concurrent Ray Tune trials)."""
    return f"{model_name}-{local_time}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pth"


# RNG states, so that a resumed run continues exactly as the uninterrupted one would.
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """The states of Python's, numpy's and torch's global RNGs (and of named torch generators)."""
    import random

    py = random.getstate()
    npy = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    import random

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), npy[2], npy[3], npy[4]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].cpu())


def symmetric_norm_adjacency(inter: sp.spmatrix, device: torch.device | str | None = None) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item bipartite graph as a torch sparse COO tensor.

    Replaces RecBole 1.2.1's ``get_norm_adj_mat`` (LightGCN, SGL, NGCF, ...), which fills a
    ``dok_matrix`` through ``dok_matrix._update``, removed in SciPy 1.13, and builds the tensor
    with ``torch.sparse.FloatTensor``, deprecated in torch 2.x. Built from COO here (faster too).
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
