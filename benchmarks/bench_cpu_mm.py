"""The CPU product shim (``recbole_dns.shims.cpu_mm``) against ``torch.mm``, side by side in one run.

    python benchmarks/bench_cpu_mm.py [--users 22364 --items 12102 --dim 64 --reps 5]

On the CPU the pool refresh and the full-sort evaluation are one ``users x d`` by ``d x items`` float32 product
per chunk. torch's x86 wheels compute it with MKL, which takes a generic code path on non-Intel CPUs; there
``cpu_mm`` uses numpy's OpenBLAS. Printed, alternated, medians: (a) one refresh chunk's product (the
``dns_refresh_mb`` 256 chunk), (b) one evaluation batch's product (4096 users, RecBole's ``eval_batch_size``;
fewer where the scores would pass 256 MiB),
(c) a whole exact refresh (``build_pool``, ranks 51-150 of ``similar``, as BPR_DNS's default) through either
product, each path in its own process (``RECBOLE_DNS_CPU_MM``). Defaults: amazon-beauty's size, synthetic tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recbole_dns.dns import build_pool, chunk_size_for  # noqa: E402
from recbole_dns.shims import CPU_MM_ENV, _numpy_blas, cpu_mm  # noqa: E402


def _tables(args) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(args.users, args.dim, generator=g), torch.randn(args.items, args.dim, generator=g)


def child(args) -> None:
    """One path's whole exact refresh, median of ``reps`` (printed as JSON)."""
    import scipy.sparse as sp

    users, items = _tables(args)
    rng = torch.Generator().manual_seed(1)
    rows = torch.arange(args.users).repeat_interleave(8)
    cols = torch.randint(1, args.items, (args.users * 8,), generator=rng)
    exclude = sp.csr_matrix((torch.ones(rows.numel()).numpy(), (rows.numpy(), cols.numpy())),
                            shape=(args.users, args.items))
    chunk = chunk_size_for(args.items, 256, "cpu")
    build_pool(users, items, exclude, 100, "similar", chunk, skip=50)  # warm-up
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        build_pool(users, items, exclude, 100, "similar", chunk, skip=50)
        times.append(time.perf_counter() - start)
    print(json.dumps({"refresh_s": statistics.median(times), "numpy": _numpy_blas() is not None}))


def products(args, rows: int) -> tuple[float, float]:
    users, items = _tables(args)
    a, b = users[:rows], items.t()
    out = torch.empty(rows, args.items)
    t_torch, t_shim = [], []
    for _ in range(args.reps + 1):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        t_torch.append(time.perf_counter() - start)
        start = time.perf_counter()
        cpu_mm(a, b, out=out)
        t_shim.append(time.perf_counter() - start)
    return statistics.median(t_torch[1:]), statistics.median(t_shim[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=22364)
    parser.add_argument("--items", type=int, default=12102)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"cpu_mm uses numpy's OpenBLAS here: {_numpy_blas() is not None} ({torch.get_num_threads()} torch threads)")
    for name, rows in (("(a) refresh chunk", min(args.users, chunk_size_for(args.items, 256, "cpu"))),
                       ("(b) evaluation batch", min(args.users, 4096, max(1, 2**26 // args.items)))):
        t_torch, t_shim = products(args, rows)
        print(f"{name} {rows} x {args.dim} by {args.dim} x {args.items}: torch.mm {t_torch * 1e3:.1f} ms, "
              f"cpu_mm {t_shim * 1e3:.1f} ms, ratio {t_shim / t_torch:.2f}")
    res = {}
    for path in ("torch", "numpy", "torch", "numpy"):  # alternated, each in a fresh process
        env = {**os.environ, CPU_MM_ENV: path}
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child"], env=env, capture_output=True,
                              text=True, check=True)
        res.setdefault(path, []).append(json.loads(proc.stdout.strip().splitlines()[-1])["refresh_s"])
    t_torch, t_numpy = statistics.median(res["torch"]), statistics.median(res["numpy"])
    print(f"(c) exact refresh, {args.users} users x {args.items} items, band 51-150: torch.mm {t_torch:.3f} s, "
          f"numpy {t_numpy:.3f} s, ratio {t_numpy / t_torch:.2f}")


if __name__ == "__main__":
    main()
