"""DNS pool refresh at scale, on synthetic embeddings, measured side by side in one run.

    python benchmarks/bench_refresh.py                                   # 1e5 x 1e5 and 1e5 x 1e6, CUDA if available
    python benchmarks/bench_refresh.py --sizes 100000x100000 --dtypes float32 float16 bfloat16
    python benchmarks/bench_refresh.py --sizes 1000000x1000000 --device cuda --refresh_mb 256 4096

For every size (users x items; ``--d``, ``--k``) and ``--refresh_mb`` bound, a fresh child process builds
seeded random embeddings and a sparse random exclusion matrix (``--per-user`` random items per user,
default 50, of the order of yelp2018's 49 and gowalla's 34 training interactions per user, plus the
padding item 0), then measures

(1) the peak extra memory of one refresh (``DNSPool.refresh`` on one process, what a refresh epoch runs),
    next to ``dns_refresh_mb`` (CPU: peak RSS via ``/proc/self/clear_refs``; CUDA: allocator peak);
(2) the refresh against its floor - the normalised matrix product and ``torch.topk`` on the same chunks
    into the same reused buffer, without masking and without the pool's gather - alternated (the order
    swapped every repetition), median of the per-repetition ratios;
(3) for each other ``--dtypes`` (``dns_refresh_dtype``): its refresh time and its pool's overlap with the
    float32 pool (mean share of a user's k items in both; share of identical rows).

(4) with ``--index ivf`` (the default on the CPU): the same pool through ``dns_index: ivf`` in its own fresh
    process, for every user: refresh time (index build + queries) and the build alone, recall of the exact
    pool (mean share of a measured user's exact pool items that the index's pool has; the exact pools of the
    measured users are computed after the timing), and peak extra memory. ``--pools`` names the pools:
    ``dissimilar`` (the paper's, k lowest cosines) and ``band`` (BPR_DNS's: ranks 51-150 of the highest).

Embeddings: ``--spectrum 0`` draws isotropic Gaussian tables, the worst case for any vector index (no
structure at all; trained tables are far from it); ``--spectrum A`` (default 1.55) draws them with the
variance of direction j proportional to j^-A in a random rotation, users and items alike. 1.55 is the
power-law fit of the singular values of a BPR_DNS item table trained on gowalla (``--fit CHECKPOINT``
prints the fit of a RecBole checkpoint's item table).

``--max-users`` caps the users measured (the first ones; their exclusion rows): the time per user is
measured on them and the full refresh time extrapolated from it (printed with ``~``). Default: every
user on CUDA; on the CPU every user up to 1e5 items and 2000 users above (1e5 x 1e6 takes ~20 min
on 2 cores). Targets: 1e5 x 1e5 on 2 CPU cores within 1.2x of the floor and under 1 GiB extra memory;
1e6 x 1e6 on an H100-class GPU under 30 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from harness import peak_extra_bytes, timed  # this folder; puts the repository on sys.path

from recbole_dns.defaults import default
from recbole_dns.dns import REFRESH_DTYPES, DNSPool, chunk_size_for
from recbole_dns.shims import cpu_mm


def synthetic(n_users: int, n_items: int, d: int, per_user: int, device: torch.device, seed: int = 0,
              spectrum: float = 0.0):
    """Random ``[n_users, d]`` / ``[n_items, d]`` tables (isotropic, or with variance ``j^-spectrum`` along
    direction j of a random rotation) and a CSR exclusion matrix: ``per_user`` random items per user
    (duplicates merged) plus RecBole's padding item 0."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, d, generator=gen)
    items = torch.randn(n_items, d, generator=gen)
    if spectrum:
        scale = torch.arange(1, d + 1, dtype=torch.float32) ** (-spectrum / 2)
        rotation = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
        users, items = (users * scale) @ rotation, (items * scale) @ rotation
    users, items = users.to(device), items.to(device)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), per_user + 1)
    cols = rng.integers(1, n_items, size=(n_users, per_user + 1))
    cols[:, 0] = 0
    exclude = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols.ravel())), shape=(n_users, n_items))
    exclude.sum_duplicates()
    exclude.data[:] = 1.0
    return users, items, exclude


def floor(users: torch.Tensor, items: torch.Tensor, k: int, chunk: int, dtype: torch.dtype) -> None:
    """The work a refresh cannot avoid: normalise, one product (the refresh's own, :func:`cpu_mm`) and one top-k
    per chunk, reused buffer."""
    user_n = F.normalize(users.float(), dim=1).to(dtype)
    item_n_t = F.normalize(items.float(), dim=1).to(dtype).t()
    buffer = torch.empty((min(chunk, users.shape[0]), items.shape[0]), dtype=dtype, device=users.device)
    for start in range(0, users.shape[0], chunk):
        scores = buffer[: min(chunk, users.shape[0] - start)]
        cpu_mm(user_n[start : start + chunk], item_n_t, out=scores)
        torch.topk(scores, k, dim=1, largest=False, sorted=True)


def overlap(a: torch.Tensor, b: torch.Tensor, block: int = 2048) -> tuple[float, float]:
    """Mean share of a row's items found in the other pool's row, and the share of identical rows."""
    shared, same = 0.0, 0
    for start in range(0, a.shape[0], block):
        x, y = a[start : start + block], b[start : start + block]
        shared += float((x.unsqueeze(2) == y.unsqueeze(1)).any(2).float().mean(1).sum())
        same += int((x.sort(1).values == y.sort(1).values).all(1).sum())
    return shared / a.shape[0], same / a.shape[0]


def child(spec: dict) -> dict:
    """One size and bound, in a fresh process (so that the memory peak is the refresh's)."""
    device = torch.device(spec["device"])
    n_users, n_items, measured = spec["users"], spec["items"], spec["measured"]
    users, items, exclude = synthetic(measured, n_items, spec["d"], spec["per_user"], device, spectrum=spec["spectrum"])
    k, mb = spec["k"], spec["refresh_mb"]
    pool = DNSPool(exclude, n=1, k=k, sampler="dissimilar", memory_mb=mb, index="exact")
    chunk = chunk_size_for(n_items, mb, device)

    def refresh(p: DNSPool = pool) -> torch.Tensor:
        p.refresh(users, items, 0)
        return p.pool

    # (1) memory of the first refresh, before anything else has touched the allocator
    extra, reference = peak_extra_bytes(refresh, device)
    pool.pool = None
    # (2) refresh against floor, alternated
    t_ours, t_floor = [], []
    floor(users[:chunk], items, k, chunk, torch.float32)  # warm-up (BLAS, allocator)
    for rep in range(spec["reps"]):  # ours first on even repetitions, the floor first on odd ones
        for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
            if which == 0:
                t_ours.append(timed(refresh, device)[0])
                pool.pool = None
            else:
                t_floor.append(timed(lambda: floor(users, items, k, chunk, torch.float32), device)[0])
    res = {
        "users": n_users, "items": n_items, "measured_users": measured, "refresh_mb": mb, "chunk_users": chunk,
        "refresh_s": statistics.median(t_ours), "floor_s": statistics.median(t_floor),
        "ratio": statistics.median(a / b for a, b in zip(t_ours, t_floor)),
        "extra_mib": extra / 2**20,
        # what the extra memory is made of: the pool itself, the normalised tables, the exclusion
        # index on the device, the reused score buffer
        "pool_mib": measured * k * 8 / 2**20,
        "tables_mib": (measured + n_items) * spec["d"] * 4 / 2**20,
        "exclusion_mib": (exclude.nnz + measured + 1) * 8 / 2**20,
        "buffer_mib": min(chunk, measured) * n_items * 4 / 2**20,
        "dtypes": {},
    }
    res["per_user_ms"] = res["refresh_s"] / measured * 1e3
    res["full_refresh_s"] = res["per_user_ms"] * n_users / 1e3
    # (3) half-precision scoring
    for name in spec["dtypes"]:
        if name == "float32":
            continue
        half = DNSPool(exclude, n=1, k=k, sampler="dissimilar", memory_mb=mb, dtype=name, index="exact")
        seconds, got = timed(lambda: refresh(half), device)
        share, same = overlap(got, reference)
        res["dtypes"][name] = {"refresh_s": seconds, "per_user_ms": seconds / measured * 1e3,
                               "overlap": share, "identical_rows": same}
    return res


#: --pools: name -> (sampler, skip)
POOLS = {"dissimilar": ("dissimilar", 0), "band": ("similar", 50)}


def child_index(spec: dict) -> dict:
    """(4): one pool through the index for every user, then its recall of the exact pool on the measured users."""
    from recbole_dns.dns.index import build_ivf, n_lists

    device = torch.device(spec["device"])
    n_users, n_items, measured, k = spec["users"], spec["items"], spec["measured"], spec["k"]
    users, items, exclude = synthetic(n_users, n_items, spec["d"], spec["per_user"], device, spectrum=spec["spectrum"])
    sampler, skip = POOLS[spec["pool"]]
    pool = DNSPool(exclude, n=1, k=k, sampler=sampler, memory_mb=spec["refresh_mb"], skip=skip, index="ivf",
                   nprobe=spec["nprobe"])
    extra, (seconds, _) = peak_extra_bytes(lambda: timed(lambda: pool.refresh(users, items, 0), device), device)
    got = pool.pool[:measured]
    build_s, _ = timed(lambda: build_ivf(F.normalize(items.float(), dim=1)), device)
    exact = DNSPool(exclude[:measured], n=1, k=k, sampler=sampler, skip=skip, index="exact")
    exact_s, _ = timed(lambda: exact.refresh(users[:measured], items, 0), device)
    recall = float((got.unsqueeze(2) == exact.pool.unsqueeze(1)).any(2).float().mean())
    return {"users": n_users, "items": n_items, "measured_users": measured, "pool": spec["pool"], "k": k,
            "nprobe": spec["nprobe"], "nlist": n_lists(n_items), "refresh_s": seconds, "build_s": build_s,
            "exact_full_s": exact_s / measured * n_users, "recall": recall, "extra_mib": extra / 2**20}


def fit_spectrum(path: str) -> None:
    """Print the power-law exponent of the singular values (squared) of a checkpoint's item table."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    name = next(key for key in state if key.startswith("item") and key.endswith("weight"))
    energy = torch.linalg.svdvals(state[name][1:].float()) ** 2
    j = torch.arange(1, energy.numel() + 1, dtype=torch.float64)
    top = min(40, energy.numel())
    slope = np.polyfit(np.log(j[:top].numpy()), np.log(energy[:top].double().numpy()), 1)[0]
    print(f"{name} {tuple(state[name].shape)}: variance of direction j ~ j^-{-slope:.2f} (fit on the first {top})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100000x100000", "100000x1000000"], help="USERSxITEMS")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--per-user", dest="per_user", type=int, default=50, help="excluded items per user")
    parser.add_argument("--refresh_mb", type=float, nargs="+", default=[256.0], help="dns_refresh_mb value(s)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=list(REFRESH_DTYPES),
                        help="scoring precisions (default: all on CUDA, float32 on the CPU)")
    parser.add_argument("--max-users", dest="max_users", type=int, default=None,
                        help="users measured per size (default: all on CUDA; CPU: all up to 1e5 items, else 2000)")
    parser.add_argument("--reps", type=int, default=1, help="alternated refresh/floor repetitions")
    parser.add_argument("--spectrum", type=float, default=1.55, help="0: isotropic tables; A: variance j^-A")
    parser.add_argument("--index", nargs="*", default=None, choices=["ivf"],
                        help="index(es) against the exact refresh (default: ivf on the CPU, none on CUDA)")
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--nprobe", type=int, nargs="+", default=None, help="dns_index_nprobe (default: the package's)")
    parser.add_argument("--fit", default=None, help="print the spectrum fit of a checkpoint's item table and exit")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_index(spec) if "pool" in spec else child(spec)))
        return
    if args.fit:
        fit_spectrum(args.fit)
        return
    indexes = args.index if args.index is not None else (["ivf"] if args.device == "cpu" else [])
    nprobes = args.nprobe or [default("dns_index_nprobe")]
    dtypes = args.dtypes or (list(REFRESH_DTYPES) if args.device == "cuda" else ["float32"])
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    results = []
    for size in args.sizes:
        n_users, n_items = (int(float(x)) for x in size.lower().split("x"))
        if args.max_users is not None:
            measured = min(n_users, args.max_users)
        else:
            measured = n_users if args.device == "cuda" or n_items <= 100_000 else min(n_users, 2000)
        for mb in args.refresh_mb:
            spec = {"device": args.device, "users": n_users, "items": n_items, "measured": measured, "d": args.d,
                    "k": args.k, "per_user": args.per_user, "refresh_mb": mb, "reps": args.reps, "dtypes": dtypes,
                    "spectrum": args.spectrum}
            res = _run_child(spec, size)
            results.append(res)
            _print_row(res, args)
            for index in indexes:
                for name in args.pools:
                    for nprobe in nprobes:
                        res = _run_child({**spec, "index": index, "pool": name, "nprobe": nprobe}, size)
                        results.append(res)
                        _print_index_row(res)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "torch": torch.__version__, "results": results}, indent=1))
    print(f"\n({device_name}, torch {torch.__version__}; d={args.d}, k={args.k}, {args.per_user} excluded items per user; "
          f"tables: {'isotropic' if not args.spectrum else f'spectrum j^-{args.spectrum}'}; "
          "~ = extrapolated from the measured users' time per user)")


def _run_child(spec: dict, size: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_refresh: the {size} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_index_row(r: dict) -> None:
    speed = r["exact_full_s"] / r["refresh_s"]
    print(f"    ivf ({r['pool']} pool, nprobe {r['nprobe']} of {r['nlist']} lists): refresh {r['refresh_s']:.1f} s "
          f"for all {r['users']} users (index build {r['build_s']:.1f} s) = {speed:.1f}x faster than exact "
          f"(~{r['exact_full_s']:.0f} s); recall of the exact pool {r['recall']:.3f} ({r['measured_users']} "
          f"users); peak extra memory {r['extra_mib']:.0f} MiB", flush=True)


def _print_row(r: dict, args) -> None:
    partial = r["measured_users"] < r["users"]
    full = f"~{r['full_refresh_s']:.1f} s" if partial else f"{r['refresh_s']:.1f} s"
    print(
        f"{r['users']:>8} users x {r['items']:>8} items (measured {r['measured_users']} users, chunk {r['chunk_users']}): "
        f"refresh {full} ({r['per_user_ms']:.3f} ms/user); refresh/floor {r['refresh_s']:.2f}/{r['floor_s']:.2f} s "
        f"= {r['ratio']:.2f}; peak extra memory {r['extra_mib']:.0f} MiB (dns_refresh_mb {r['refresh_mb']:.0f}; "
        f"of which pool {r['pool_mib']:.0f}, normalised tables {r['tables_mib']:.0f}, exclusion index "
        f"{r['exclusion_mib']:.0f}, score buffer {r['buffer_mib']:.0f})",
        flush=True,
    )
    for name, h in r["dtypes"].items():
        print(f"    {name}: {h['per_user_ms']:.3f} ms/user ({h['per_user_ms'] / r['per_user_ms']:.2f}x float32); pool overlap "
              f"with float32 {h['overlap']:.4f}, identical rows {h['identical_rows']:.4f}", flush=True)


if __name__ == "__main__":
    main()
