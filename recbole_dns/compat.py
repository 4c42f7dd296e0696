"""Shims for RecBole 1.2.1 on today's torch / SciPy / pandas, applied by one call: :func:`apply`.

Each shim names the library version it works around. ``import recbole_dns`` calls :func:`apply` once.
(Checkpoints that load on torch >= 2.6 are not a shim but this package's own format: see
:mod:`recbole_dns.checkpoint`.)
"""

from __future__ import annotations

import datetime
import os
import warnings

import scipy.sparse as sp

#: Default of the ``dist_timeout`` config key: seconds a rank waits for the others in a collective
#: operation (or at start-up) before the run stops with an error.
DEFAULT_DIST_TIMEOUT = 600


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


def distributed_on_cuda(config_dict: dict) -> bool:
    """Whether a distributed run trains on GPUs (NCCL): ``use_gpu`` and a GPU visible through ``gpu_id``.

    Raises:
        ConfigError: fewer GPUs visible than ``nproc`` ranks on this machine.
    """
    import torch

    from recbole_dns.errors import ConfigError

    d = config_dict
    gpu_id = d.get("gpu_id", "")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    if not (bool(d.get("use_gpu", True)) and len(gpu_id) > 0 and torch.cuda.is_available()):
        return False
    nproc = int(d.get("nproc", 1))
    if torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"--nproc={nproc} needs {nproc} GPUs but gpu_id={gpu_id!r} makes {torch.cuda.device_count()} visible: "
            "list them in gpu_id (e.g. --gpu_id=0,1), or set --use_gpu=False to train on the CPU (gloo)"
        )
    return True


def init_process_group(config_dict: dict) -> None:
    """RecBole 1.2.1's ``Config._init_device`` for a distributed run (``local_rank`` set), on any machine.

    RecBole 1.2.1 hard-codes ``init_process_group(backend="nccl")``, ``cuda:<local_rank>`` devices and
    ``assert len(gpu_id) >= nproc``, so a CPU-only machine cannot run ``--nproc=N``. Here the backend is
    NCCL on CUDA (``use_gpu`` and a visible GPU) and gloo otherwise, every collective operation times out
    after ``dist_timeout`` seconds (a dead or stuck rank ends the run with an error instead of a hang),
    and the rest is RecBole's: global rank ``local_rank + offset``, rendezvous at ``tcp://ip:port``,
    quiet logging on ranks other than 0.
    """
    import torch
    import torch.distributed as dist

    d = config_dict
    gpu_id = d["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    d["gpu_id"] = gpu_id
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    cuda = distributed_on_cuda(d)
    local_rank = int(d["local_rank"])
    timeout = d.get("dist_timeout", DEFAULT_DIST_TIMEOUT)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            rank=local_rank + int(d.get("offset", 0)),
            world_size=int(d["world_size"]),
            init_method=f"tcp://{d['ip']}:{d['port']}",
            timeout=datetime.timedelta(seconds=float(timeout)),
        )
    d["single_spec"] = False
    if cuda:
        d["device"] = torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    else:
        d["device"] = torch.device("cpu")
    if local_rank != 0:
        d.update(state="error", show_progress=False, verbose=False)


def distributed_on_cpu() -> None:
    """RecBole 1.2.1 on a CPU-only machine: ``--nproc=N`` with gloo (see :func:`init_process_group`), and
    ``AbstractTrainer`` wraps the model in ``DistributedDataParallel(model, device_ids=[local_rank])``,
    which torch rejects for a CPU module (``device_ids`` only for CUDA modules): dropped on the CPU."""
    from recbole.config import configurator
    from recbole.trainer import trainer as recbole_trainer
    from torch.nn.parallel import DistributedDataParallel

    original = configurator.Config._init_device
    if getattr(original, "_recbole_dns", False):
        return

    def _init_device(self) -> None:
        if "local_rank" not in self.final_config_dict:
            return original(self)
        init_process_group(self.final_config_dict)

    def _ddp(module, device_ids=None, **kwargs):
        on_cuda = any(p.is_cuda for p in module.parameters())
        return DistributedDataParallel(module, device_ids=device_ids if on_cuda else None, **kwargs)

    _init_device._recbole_dns = True
    configurator.Config._init_device = _init_device
    recbole_trainer.DistributedDataParallel = _ddp


def race_free_ensure_dir() -> None:
    """RecBole 1.2.1's ``ensure_dir`` checks ``os.path.exists`` and then calls ``os.makedirs``: two ranks of
    a distributed run that create ``./log`` (or the checkpoint folder) at once fail with
    ``FileExistsError``. Replaced, in every module that imported it, by ``os.makedirs(exist_ok=True)``."""
    import importlib

    def ensure_dir(dir_path: str) -> None:
        os.makedirs(dir_path, exist_ok=True)

    for name in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.dataset.dataset", "recbole.data.utils"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


_APPLIED = False


def apply() -> None:
    """Apply every shim of this module (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    silence_known_warnings()
    restore_dok_update()
    distributed_on_cpu()
    race_free_ensure_dir()
    _APPLIED = True
