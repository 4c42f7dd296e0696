"""Collective operations and process-group setup for a distributed run (torch DDP), below everything else.

A DNS model builds its pool once per refresh across the ranks with :func:`shard_bounds`,
:func:`all_gather_rows` and :func:`shared_seed`; checkpoints use :func:`barrier` and
:func:`broadcast_object`; :class:`recbole_dns.Config` joins the process group with
:func:`init_process_group`. Without a process group every function is the one-process case.
The launcher that starts the ranks is :mod:`recbole_dns.launcher`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from recbole_dns.defaults import default
from recbole_dns.errors import ConfigError

#: config keys that describe a distributed run's process group (set by :func:`run`), not the model
PROCESS_GROUP_KEYS = ("local_rank", "world_size", "nproc", "ip", "port", "offset")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of ``n`` that ``rank`` of ``world_size`` owns: contiguous, sizes differ by <= 1."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def all_gather_rows(shard: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's :func:`shard_bounds` shard of an ``n``-row tensor, on every rank."""
    rank, world = rank_and_world()
    if world == 1:
        return shard
    bounds = [shard_bounds(n, world, r) for r in range(world)]
    start, end = bounds[rank]
    if shard.shape[0] != end - start:
        raise ValueError(f"rank {rank} holds {shard.shape[0]} rows, expected {end - start} of {n}")
    rows = max(e - s for s, e in bounds)
    padded = shard.new_zeros((rows, *shard.shape[1:]))  # all_gather wants equal shapes
    padded[: shard.shape[0]] = shard
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: e - s] for part, (s, e) in zip(parts, bounds)])


def shared_seed(device: torch.device | str = "cpu") -> int:
    """A seed drawn from rank 0's torch RNG and broadcast: the same on every rank (rank 0's draw alone
    without a process group)."""
    seed = torch.randint(0, 2**62, (1,), dtype=torch.long)
    _, world = rank_and_world()
    if world > 1:
        seed = seed.to(device)
        dist.broadcast(seed, src=0)
    return int(seed.item())


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself without a process group)."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def distributed_on_cuda(config_dict: dict) -> bool:
    """Whether a distributed run trains on GPUs (NCCL): ``use_gpu`` and a GPU visible through ``gpu_id``.

    Raises:
        ConfigError: fewer GPUs visible than ``nproc`` ranks on this machine.
    """
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
    d = config_dict
    gpu_id = d["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    d["gpu_id"] = gpu_id
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    cuda = distributed_on_cuda(d)
    local_rank = int(d["local_rank"])
    timeout = d.get("dist_timeout", default("dist_timeout"))
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
