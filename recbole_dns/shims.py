"""Shims for RecBole 1.2.1 on today's torch / SciPy / pandas: each gated on the library version it works
around and applied only where it is needed, never at import.

* :func:`silence_known_warnings` - by the runner (:mod:`recbole_dns.quick_start`) before it trains;
* :func:`restore_dok_update` - by the model registry when it hands out one of RecBole's graph models;
* :func:`distributed_run` - by :class:`recbole_dns.Config` in a distributed run only;
* :func:`fused_optimizer_devices` - by the trainer, with ``fused_optimizer: true``;
* :func:`cpu_mm` - by the exact pool refresh (:mod:`recbole_dns.dns.kernel`) and the
  full-sort scores of BPR, LightGCN (and its subclasses) and ``dns_predict: cosine``, on the CPU;
* :func:`lookup` - by BPR's and the DNS loss's embedding lookups, on the CPU.

(The device / process-group shim is :meth:`recbole_dns.Config._init_device`; checkpoints that load on
torch >= 2.6 are this package's own format, :mod:`recbole_dns.checkpoint`.)
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def version_at_least(version: str, minimum: str) -> bool:
    """Whether a ``major.minor[.patch]`` version string (suffixes ignored) is at least ``minimum``."""

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])

    return parts(version) >= parts(minimum)


def recbole_is(version: str) -> bool:
    """Whether the installed RecBole is ``version`` (the shims below are written against RecBole 1.2.1)."""
    import recbole

    return str(recbole.__version__) == version


def silence_known_warnings() -> None:
    """Warnings RecBole 1.2.1 raises on every run with today's libraries, none of which is ours to fix.

    * pandas >= 2.2: ``Dataset._fill_nan`` calls ``column.fillna(inplace=True)``, flagged as chained
      assignment (it still fills under pandas < 3, which ``pyproject.toml`` pins);
    * torch >= 2.4: ``Trainer._train_epoch`` builds the deprecated ``torch.cuda.amp.GradScaler`` every epoch;
    * torch >= 2.0: "Sparse CSR tensor support is in beta" on every CSR adjacency (this package's graphs).
    """
    import pandas
    import torch

    if version_at_least(pandas.__version__, "2.2"):
        warnings.filterwarnings("ignore", message="A value is trying to be set on a copy", category=FutureWarning)
    if version_at_least(torch.__version__, "2.4"):
        warnings.filterwarnings("ignore", message=r"`torch.cuda.amp.GradScaler", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def restore_dok_update() -> None:
    """SciPy >= 1.13 removed ``dok_matrix._update``, which RecBole 1.2.1's NGCF, NCL, GCMC and SpectralCF
    call to fill their adjacency (this package's LightGCN and SGL build theirs from COO instead).
    Restores the old, unchecked dict update so those built-in models start."""
    import scipy
    import scipy.sparse as sp

    if version_at_least(scipy.__version__, "1.13") and not hasattr(sp.dok_matrix, "_update"):

        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


def _ddp_without_cpu_device_ids():
    """RecBole 1.2.1's ``AbstractTrainer`` wraps the model in ``DistributedDataParallel(model,
    device_ids=[local_rank])``, which torch rejects for a CPU module: ``device_ids`` kept on CUDA only."""
    from torch.nn.parallel import DistributedDataParallel

    def ddp(module, device_ids=None, **kwargs):
        on_cuda = any(p.is_cuda for p in module.parameters())
        return DistributedDataParallel(module, device_ids=device_ids if on_cuda else None, **kwargs)

    return ddp


def _race_free_ensure_dir(dir_path: str) -> None:
    """RecBole 1.2.1's ``ensure_dir`` checks ``os.path.exists`` and then calls ``os.makedirs``: two ranks of
    a distributed run that create ``./log`` (or the checkpoint folder) at once fail with ``FileExistsError``."""
    os.makedirs(dir_path, exist_ok=True)


def distributed_run() -> None:
    """RecBole 1.2.1 in a rank of a distributed run (idempotent): the CPU-capable ``DistributedDataParallel``
    wrapper of its trainer, and a race-free ``ensure_dir`` in every module that imported it."""
    if not recbole_is("1.2.1"):
        return
    from recbole.trainer import trainer as recbole_trainer

    if not getattr(recbole_trainer.DistributedDataParallel, "_recbole_dns", False):
        ddp = _ddp_without_cpu_device_ids()
        ddp._recbole_dns = True
        recbole_trainer.DistributedDataParallel = ddp
    for name in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.dataset.dataset", "recbole.data.utils"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = _race_free_ensure_dir


#: ``RECBOLE_DNS_CPU_MM``: ``torch`` or ``numpy`` forces :func:`cpu_mm`'s choice (tests, benchmarks); unset: automatic
CPU_MM_ENV = "RECBOLE_DNS_CPU_MM"


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=None)
def _numpy_blas():
    """numpy's OpenBLAS (a threadpoolctl selection, to set its threads) when :func:`cpu_mm` should use it, else None."""
    choice = os.environ.get(CPU_MM_ENV, "")
    if choice not in ("", "torch", "numpy"):
        raise ValueError(f"environment variable {CPU_MM_ENV} must be torch or numpy (or unset); got {choice!r}")
    if choice == "torch":
        return None
    try:
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(internal_api="openblas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn, a RecBole dependency
        return None
    if not blas.lib_controllers:
        return None
    if choice == "numpy":
        return blas
    slow_path = torch.backends.mkl.is_available() and _cpu_vendor() not in ("", "GenuineIntel")
    return blas if slow_path else None


def cpu_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.mm(a, b, out=out)`` for 2-D tensors; products that autograd records stay ``torch.mm``.

    torch's x86 wheels multiply float32 matrices with MKL, which takes a generic code path on non-Intel
    CPUs: on this project's AMD EPYC (AVX2) a refresh's score product (2,772 x 64 by 64 x 12,102) took 1.6x
    as long as numpy's OpenBLAS on one thread, 1.3x on two (``benchmarks/bench_cpu_mm.py``; numpy was slower
    for the index's small per-list blocks, which stay ``torch.mm``). So on such a CPU (MKL build, CPU vendor
    not Intel) float32 CPU products go through numpy, with as many OpenBLAS threads as torch uses; everywhere
    else (GPU, Intel, other dtypes) this is ``torch.mm``. ``RECBOLE_DNS_CPU_MM=torch|numpy`` forces the choice.
    """
    blas = _numpy_blas()
    tensors = (a, b) if out is None else (a, b, out)
    plain = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    recorded = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if blas is None or not plain or recorded or (out is not None and not out.is_contiguous()):
        return torch.mm(a, b, out=out)
    if out is None:
        out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.float32)
    with blas.limit(limits=torch.get_num_threads()):
        np.matmul(a.detach().numpy(), b.detach().numpy(), out=out.numpy())
    return out


class _CpuLookup(torch.autograd.Function):
    """``table[ids]`` whose backward adds the rows with one ``index_add_`` (see :func:`lookup`)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = table.shape[0]
        return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        width = grad.shape[-1]
        return grad.new_zeros((ctx.rows, width)).index_add_(0, ids.reshape(-1), grad.reshape(-1, width)), None


def lookup(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``F.embedding(ids, table)`` (rows of a 2-D ``table``, shaped ``[*ids.shape, d]``), the same values and
    gradients.

    torch's CPU backward of an embedding lookup (``embedding_dense_backward``, torch 2.13) adds the gradient one
    row per call of its add kernel, with every thread scanning all the ids: a ``[6144, 64]`` gradient into a
    12,102-row table took 0.77 ms against 0.39 ms for ``index_add_``, which sums the same rows in the same order
    (bitwise equal; ``benchmarks/bench_step.py``). So a lookup whose table needs a gradient on the CPU goes through
    ``index_add_``; everywhere else (GPU, where torch's backward is a sorted, deterministic kernel, and
    no-gradient lookups) this is ``F.embedding``. Not gated on a torch version (measured on 2.13 only):
    ``bench_step.py`` prints both backwards and whether they are equal, to re-check on an upgrade.
    """
    if table.device.type != "cpu" or not (table.requires_grad and torch.is_grad_enabled()):
        return F.embedding(ids, table)
    return _CpuLookup.apply(table, ids)


def fused_optimizer_devices() -> tuple[str, ...]:
    """The device types torch has fused Adam / AdamW kernels for. torch checks a parameter's device only at the
    optimiser's first step, deep inside training; this asks torch's own list first (a private helper since torch 2.2;
    before torch 2.4 the fused kernels were CUDA-only)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return ("cuda",) if not version_at_least(torch.__version__, "2.4") else ("cpu", "cuda")
    return tuple(_get_fused_kernels_supported_devices())
