"""Shims for RecBole 1.2.1 on today's torch / SciPy / pandas, applied by one call: :func:`apply`.

Each shim names the library version it works around. ``import recbole_dns`` calls :func:`apply` once.
(Checkpoints that load on torch >= 2.6 are not a shim but this package's own format: see
:mod:`recbole_dns.checkpoint`.)
"""

from __future__ import annotations

import warnings

import scipy.sparse as sp


def silence_known_warnings() -> None:
    """Warnings RecBole 1.2.1 raises on every run with today's libraries, none of which is ours to fix.

    * pandas >= 2.2: ``Dataset._fill_nan`` calls ``column.fillna(inplace=True)``, flagged as chained
      assignment (it still fills under pandas < 3, which ``pyproject.toml`` pins);
    * torch >= 2.4: ``Trainer._train_epoch`` builds the deprecated ``torch.cuda.amp.GradScaler`` every epoch;
    * torch 2.x: "Sparse CSR tensor support is in beta" on every CSR adjacency (this package's graphs).
    """
    warnings.filterwarnings("ignore", message="A value is trying to be set on a copy", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`torch.cuda.amp.GradScaler", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def restore_dok_update() -> None:
    """SciPy >= 1.13 removed ``dok_matrix._update``, which RecBole 1.2.1's NGCF, NCL, GCMC and SpectralCF
    call to fill their adjacency (this package's LightGCN and SGL build theirs from COO instead).
    Restores the old, unchecked dict update so those built-in models start."""
    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


_APPLIED = False


def apply() -> None:
    """Apply every shim of this module (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    silence_known_warnings()
    restore_dok_update()
    _APPLIED = True
