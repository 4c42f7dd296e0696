"""Work on several processes: the ranks of one training (torch DDP, as RecBole 1.2.1's
``run_recbole.py --nproc``) and a Ray session for many trainings (sweeps, experiments).

:func:`run` spawns ``nproc`` processes with ``torch.multiprocessing.spawn``, each of which runs
:func:`~recbole_dns.quick_start.run_recbole_dns` as one rank: :class:`recbole_dns.Config` joins the process
group (gloo on the CPU, NCCL on GPUs, a timeout: :func:`recbole_dns.parallel.init_process_group`),
RecBole's data loaders give each rank its share of every batch and of the evaluation users, and
RecBole's ``Trainer`` all-reduces the gradients through ``DistributedDataParallel``. A DNS model builds
its pool once per refresh across the ranks (:mod:`recbole_dns.parallel`). Rank 0 writes the checkpoints;
the result comes back from rank 0.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessException

from recbole_dns.config import Config
from recbole_dns.errors import ConfigError, DistributedError
from recbole_dns.parallel import distributed_on_cuda
from recbole_dns.quick_start import run_recbole_dns


def free_port() -> int:
    """A TCP port that is free on this machine now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def init_ray(address: str | None = None, log_to_driver: bool = True) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local Ray (no dashboard), unless Ray is
    already up. Returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        # Ray starts its workers at nice 15: beside any job at normal priority they get almost no CPU (a
        # yelp2018 run took 6% of a core for an hour). A local Ray here runs them at the driver's priority
        # unless RAY_worker_niceness says otherwise.
        os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
        ray.init(include_dashboard=False, log_to_driver=log_to_driver)
    return True


def threads_per_process(nproc: int) -> int:
    """Torch threads for each of ``nproc`` processes sharing the cores this process may use (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // nproc)


@contextlib.contextmanager
def report_errors(rank: int, queue: Any) -> Iterator[None]:
    """Wrap a rank's body: an exception is put on ``queue`` (see :func:`spawn`) and re-raised; the
    process group is destroyed on the way out (after a barrier when the body succeeded)."""
    try:
        yield
        if dist.is_initialized():
            # no rank tears the group down while another still talks to it: gloo's threads then abort
            # the process at exit ("terminate called without an active exception", torch 2.13)
            dist.barrier()
    except BaseException as err:
        queue.put(("error", rank, type(err).__name__, str(err), isinstance(err, ConfigError)))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _worker(rank: int, nproc: int, kwargs: dict, queue) -> None:
    """One rank: :func:`~recbole_dns.quick_start.run_recbole_dns` with ``local_rank = rank``."""
    torch.set_num_threads(threads_per_process(nproc))  # nproc ranks share this machine's cores
    kwargs = dict(kwargs, config_dict={**kwargs["config_dict"], "local_rank": rank})
    with report_errors(rank, queue):
        result = run_recbole_dns(**kwargs)
    if rank == 0:
        queue.put(("result", rank, result))


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str | int = "5678",
    group_offset: int = 0,
    read_cmd_line: bool = True,
    resume_file: str | None = None,
) -> dict | None:
    """RecBole's ``recbole.quick_start.run`` for this package: ``nproc`` ranks on this machine.

    ``world_size`` is the number of ranks on all machines (default ``nproc``), ``group_offset`` the
    global rank of this machine's first one, ``ip:port`` rank 0's address. Without ``nproc > 1`` or
    ``world_size > 0`` it is :func:`~recbole_dns.quick_start.run_recbole_dns` in this process.

    Returns:
        ``run_recbole_dns``'s result from global rank 0 (``None`` on the other machines).

    Raises:
        ConfigError: bad flags or config (before any process starts, or from a rank).
        DistributedError: a rank failed, was killed or timed out (``dist_timeout`` seconds).
    """
    kwargs = dict(model=model, dataset=dataset, config_file_list=config_file_list, saved=saved,
                  read_cmd_line=read_cmd_line, resume_file=resume_file)
    if nproc == 1 and world_size <= 0:
        return run_recbole_dns(config_dict=config_dict, **kwargs)
    world_size = nproc if world_size == -1 else world_size
    if nproc < 1:
        raise ConfigError(f"--nproc must be an integer >= 1; got {nproc}")
    if group_offset < 0 or group_offset + nproc > world_size:
        raise ConfigError(
            f"--group_offset ({group_offset}) + --nproc ({nproc}) must be at most --world_size ({world_size}): "
            "ranks group_offset .. group_offset+nproc-1 run on this machine"
        )
    config_dict = {**(config_dict or {}), "world_size": world_size, "ip": ip, "port": port, "nproc": nproc,
                   "offset": group_offset}
    # bad keys, models, files or too few GPUs stop here with one line, before any process starts
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                    read_cmd_line=read_cmd_line)
    distributed_on_cuda(config.final_config_dict)
    results = spawn(_worker, nproc, (dict(kwargs, config_dict=config_dict),), group_offset)
    return results.get(0)


def spawn(fn: Callable[..., None], nproc: int, args: tuple = (), group_offset: int = 0) -> dict[int, Any]:
    """Run ``fn(rank, nproc, *args, queue)`` in ``nproc`` processes (``torch.multiprocessing.spawn``).

    ``fn`` reports with ``queue.put(("result", rank, value))`` (values are pickled: plain types or numpy
    arrays, not tensors, which torch would send as handles to the rank's shared memory), and
    ``queue.put(("error", rank, type name, message, is_config_error))`` before it re-raises an exception.
    The queue is read while the ranks run (a large result would otherwise block its rank).

    Returns:
        ``{local rank: value}`` of the results reported.

    Raises:
        ConfigError: a rank reported a :class:`ConfigError`.
        DistributedError: a rank failed or died; the message names the global rank and the cause.
    """
    queue = torch.multiprocessing.get_context("spawn").SimpleQueue()
    context = torch.multiprocessing.start_processes(fn, args=(nproc, *args, queue), nprocs=nproc, join=False,
                                                    start_method="spawn")
    items: list = []
    try:
        while not context.join(timeout=0.2):
            _drain(queue, items)
    except ProcessException as err:
        raise _failure(err, group_offset, _drain(queue, items)) from None
    return {item[1]: item[2] for item in _drain(queue, items) if item[0] == "result"}


def _drain(queue, items: list) -> list:
    while not queue.empty():
        items.append(queue.get())
    return items


def _failure(err: Exception, offset: int, items: list) -> Exception:
    """The one-line error for a failed spawn: the first rank that reported an error, else the dead one."""
    reports = [item for item in items if item[0] == "error"]
    if reports:
        _, rank, name, message, config_error = reports[0]
        if config_error:
            return ConfigError(message)
        lines = [line for line in message.strip().splitlines() if line.strip()]
        return DistributedError(f"rank {rank + offset} failed: {name}: {lines[-1] if lines else ''}".rstrip(": "))
    rank = getattr(err, "error_index", None)
    who = f"rank {rank + offset}" if rank is not None else "a rank"
    last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return DistributedError(f"{who} died: {last}")
