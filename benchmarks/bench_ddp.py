"""Distributed training (2 gloo processes) against one process, on ml-100k, side by side in one run.

    python benchmarks/bench_ddp.py                       # BPR_DNS and LightGCN_DNS, 3 seeds, 20 epochs
    python benchmarks/bench_ddp.py --models BPR_DNS --seeds 2020 2021 2022 2023 2024 --epochs 40

For every model and seed, the same configuration is trained by one process (all cores) and by
``--nproc`` ranks (RecBole's DDP: each rank takes ``train_batch_size / nproc`` of every batch, so the
global batch is the same; gradients are averaged across the ranks). Printed:

* the pool: after training, one sharded refresh across the ranks; whether every rank holds the same
  pool, and whether it equals a one-process ``build_pool`` from the same tables;
* test metrics of the last epoch (no early stopping): mean and standard deviation over the seeds for
  each mode, the difference and its standard error ``sqrt(sd1^2/n + sd2^2/n)``; a difference within two
  standard errors is "within noise" (seed-to-seed variation);
* time per epoch and per refresh, median over epochs (the ranks share this machine's cores: each
  gets ``cores / nproc`` torch threads; the one process ``--threads``, default all cores);
* refresh scaling (``--scale``): a refresh of synthetic tables by one process with one thread against
  ``nproc`` ranks with one thread each (the shards built in parallel, then all-gathered).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recbole_dns.config import with_dns_preset  # noqa: E402
from recbole_dns.dns import build_pool  # noqa: E402
from recbole_dns.launcher import free_port, report_errors, spawn, threads_per_process  # noqa: E402
from recbole_dns.parallel import rank_and_world  # noqa: E402
from recbole_dns.quick_start import fit_and_test, prepare  # noqa: E402

METRICS = ("ndcg@10", "recall@10", "map@10")


def train_all(args, extra: dict) -> list[dict]:
    """Every (model, seed): train, test, time a refresh and check the pool. Runs on every rank."""
    rank, world = rank_and_world()
    out = []
    for model in args.models:
        for seed in args.seeds:
            cfg = {"show_progress": False, "state": "WARNING", "seed": seed, "epochs": args.epochs, "eval_step": 0,
                   "train_batch_size": args.batch_size, "learning_rate": args.lr, "dns_n": args.n,
                   "use_gpu": False, "checkpoint_dir": args.checkpoint_dir, **extra}
            if args.data_path:
                cfg["data_path"] = args.data_path
            cfg = with_dns_preset(model, cfg)  # the setting the README's figures were measured with
            config, trainer, train, valid, test = prepare(model, args.dataset, None, cfg, False)
            result = fit_and_test(trainer, train, valid, test)["test_result"]
            seconds = trainer.epoch_times  # the pool refresh at refresh epochs included
            m = trainer.model
            with torch.no_grad():
                users, items = (t.detach() for t in m.dns_tables())
            refresh_s = []
            for _ in range(args.refresh_reps):
                if world > 1:
                    dist.barrier()
                start = time.perf_counter()
                m.dns_pool.refresh(users, items, 0)
                refresh_s.append(time.perf_counter() - start)
            pool = m.dns_pool.pool
            same_on_ranks = True
            if world > 1:
                parts = [torch.empty_like(pool) for _ in range(world)]
                dist.all_gather(parts, pool)
                same_on_ranks = all(torch.equal(p, parts[0]) for p in parts)
            single = build_pool(users, items, m.dns_pool.exclude, m.dns_pool.k, m.dns_pool.sampler)
            out.append({
                "model": model, "seed": seed, "test": {k: float(result[k]) for k in METRICS},
                "epoch_s": statistics.median(seconds[1:] or seconds), "refresh_s": statistics.median(refresh_s),
                "same_on_ranks": same_on_ranks, "equals_one_process": bool(torch.equal(pool, single)),
                "users": int(users.shape[0]), "items": int(items.shape[0]),
            })
            trainer.tensorboard.close()
    return out


def _rank(rank, nproc, args, port, queue):
    torch.set_num_threads(threads_per_process(nproc))
    with report_errors(rank, queue):
        extra = {"world_size": nproc, "nproc": nproc, "ip": "localhost", "port": port, "offset": 0, "local_rank": rank}
        res = train_all(args, extra)
    if rank == 0:
        queue.put(("result", rank, res))


def _refresh_rank(rank, nproc, args, port, queue):
    """Rank of the refresh-scaling measurement: the same synthetic tables, a timed sharded refresh."""
    torch.set_num_threads(1)
    with report_errors(rank, queue):
        dist.init_process_group("gloo", rank=rank, world_size=nproc, init_method=f"tcp://localhost:{port}")
        seconds, pool = _timed_refresh(args)
        parts = [torch.empty_like(pool) for _ in range(nproc)]
        dist.all_gather(parts, pool)
    if rank == 0:
        queue.put(("result", rank, {"seconds": seconds, "same_on_ranks": all(torch.equal(p, parts[0]) for p in parts),
                                    "pool": pool.numpy()}))


def _timed_refresh(args) -> tuple[float, torch.Tensor]:
    from bench_refresh import synthetic

    from recbole_dns.dns import DNSPool

    n_users, n_items = (int(float(x)) for x in args.scale.lower().split("x"))
    users, items, exclude = synthetic(n_users, n_items, 64, 50, torch.device("cpu"))
    pool = DNSPool(exclude, n=1, k=100)
    pool.build_shard(users[:10], items, 0, n_users // 10)  # warm-up
    seconds = []
    for _ in range(args.scale_reps):
        if rank_and_world()[1] > 1:
            dist.barrier()
        start = time.perf_counter()
        pool.refresh(users, items, 0)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), pool.pool


def refresh_scaling(args) -> list[str]:
    """One process with 1 thread against ``nproc`` ranks with 1 thread each, same synthetic tables."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_s, one_pool = _timed_refresh(args)
    torch.set_num_threads(threads)
    res = spawn(_refresh_rank, args.nproc, (args, free_port()))[0]
    same = bool(np.array_equal(res["pool"], one_pool.numpy()))
    return [f"pool refresh, synthetic {args.scale} (d=64, k=100, 50 excluded items per user), 1 thread per process: "
            f"1 process {one_s:.2f} s, {args.nproc} ranks {res['seconds']:.2f} s (ratio {res['seconds'] / one_s:.2f}); "
            f"same pool on all ranks: {res['same_on_ranks']}; equal to the 1-process pool: {same}"]


def _summary(single: list[dict], ddp: list[dict], args) -> list[str]:
    lines = []
    for model in args.models:
        s = [r for r in single if r["model"] == model]
        d = [r for r in ddp if r["model"] == model]
        pool_ok = all(r["same_on_ranks"] for r in d)
        equal = all(r["equals_one_process"] for r in d)
        lines.append(f"{model} on {args.dataset} ({d[0]['users']} users x {d[0]['items']} items), {len(args.seeds)} seeds, "
                     f"{args.epochs} epochs, global batch {args.batch_size}, lr {args.lr}:")
        lines.append(f"  pool after a sharded refresh: same on all {args.nproc} ranks: {pool_ok}; "
                     f"equal to one process's build_pool from the same tables: {equal}")
        for metric in METRICS:
            a = np.array([r["test"][metric] for r in s])
            b = np.array([r["test"][metric] for r in d])
            sd_a, sd_b = (a.std(ddof=1), b.std(ddof=1)) if len(a) > 1 else (0.0, 0.0)
            se = float(np.sqrt(sd_a**2 / len(a) + sd_b**2 / len(b)))
            diff = float(b.mean() - a.mean())
            verdict = "within noise" if abs(diff) <= 2 * se else "OUTSIDE noise"
            lines.append(f"  test {metric:<9}: 1 process {a.mean():.4f} +- {sd_a:.4f} | {args.nproc} ranks {b.mean():.4f} "
                         f"+- {sd_b:.4f} | difference {diff:+.4f} (2 s.e. {2 * se:.4f}): {verdict}")
        lines.append(
            f"  seconds per epoch {statistics.median(r['epoch_s'] for r in s):.3f} (1 process, {torch.get_num_threads()} threads) vs "
            f"{statistics.median(r['epoch_s'] for r in d):.3f} ({args.nproc} ranks); refresh "
            f"{statistics.median(r['refresh_s'] for r in s) * 1e3:.1f} ms vs {statistics.median(r['refresh_s'] for r in d) * 1e3:.1f} ms"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["BPR_DNS", "LightGCN_DNS"])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=5, help="dns_n")
    parser.add_argument("--batch_size", type=int, default=2048, help="global train_batch_size")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--refresh-reps", dest="refresh_reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the one process (default: all cores; the ranks get cores / nproc each)")
    parser.add_argument("--scale", default="10000x100000",
                        help="USERSxITEMS of the refresh-scaling measurement (synthetic tables; 'none' skips it)")
    parser.add_argument("--scale-reps", dest="scale_reps", type=int, default=2)
    parser.add_argument("--scale-only", dest="scale_only", action="store_true", help="only the refresh scaling")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.json = os.path.abspath(args.json) if args.json else None
    args.data_path = os.path.abspath(args.data_path) if args.data_path else None
    if args.scale_only:
        print("\n".join(refresh_scaling(args)))
        return
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        args.checkpoint_dir = tmp
        os.chdir(tmp)  # RecBole's log/ and log_tensorboard/
        start = time.perf_counter()
        single = train_all(args, {})
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        ddp = spawn(_rank, args.nproc, (args, free_port()))[0]
        ddp_s = time.perf_counter() - start
        os.chdir(cwd)
    lines = _summary(single, ddp, args)
    if args.scale.lower() != "none":
        lines += refresh_scaling(args)
    lines.append(f"wall time: 1 process {single_s:.0f} s, {args.nproc} ranks {ddp_s:.0f} s (process start-up included); "
                 f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} cores")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"single": single, "ddp": ddp}, indent=1))


if __name__ == "__main__":
    main()
