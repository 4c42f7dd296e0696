"""DNS overheads, measured side by side in one run.

    python benchmarks/bench_dns.py --dataset=amazon-beauty --data_path=../shared/datasets [--base=LightGCN]

(a) pool refresh (``build_pool``, masked, chunked) against the floor: one normalised matrix product plus
    ``torch.topk`` on the same tensors (no masking, no chunking), alternated, medians; for graph models
    the refresh also includes the model's one no-grad propagation;
(b) training epoch of the ``_DNS`` variant against its base model (``--base``, default BPR), same data
    and batch size, in rounds: one epoch of each and one refresh of the variant's pool on its tables as trained
    so far, in every order in turn; the ratio is the median over rounds of (variant epoch + refresh / ``dns_n``)
    / base epoch, so the machine's drift between rounds cancels; with ``--compile`` also the
    variant with its loss compiled (``dns_compile: true``), and each one's first epoch (the compiled one's
    holds the one-off compile: 14-16 s on a new machine, 4-6 s from torch's on-disk cache);
(c) peak extra memory of one refresh (CUDA: allocator peak; CPU: peak RSS of a child process), next to
    the unchunked score matrix it avoids.
Targets: (a) <= 1.5x, (b) <= 1.2x (issue 21: BPR_DNS <= 1.1x on amazon-beauty and gowalla).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from harness import add_data_args, peak_extra_bytes, timed, trainer_for  # this folder; puts the repository on sys.path

from recbole_dns.dns import build_pool, chunk_size_for
from recbole_dns.sampling import exclusion_matrix
from recbole_dns.shims import cpu_mm


def _setup(args, model: str, **config) -> tuple:
    """The trainer (and loader) of ``model``, the mechanism as the paper has it, with the options' k, n and bound."""
    return trainer_for(args, model, {"dns_k": args.k, "dns_n": args.n, "dns_refresh_mb": args.refresh_mb,
                                      "fused_optimizer": args.fused, **config}, paper=True)


def refresh(model) -> None:
    """What ``model`` runs at a refresh epoch: its tables (a graph model's propagation) and the pool's rebuild."""
    with torch.no_grad():
        model.dns_pool.refresh(*model.dns_tables(), 0)


def bench_refresh(args, trainer, train) -> dict:
    device = trainer.device
    model = trainer.model
    with torch.no_grad():
        users, items = (t.detach() for t in model.dns_tables())

    def ours():  # what the model does at a refresh epoch: tables (propagation) + build_pool
        refresh(model)

    def floor():  # the refresh's own product (cpu_mm)
        scores = cpu_mm(F.normalize(users, dim=1), F.normalize(items, dim=1).t())
        torch.topk(scores, args.k, dim=1, largest=False)

    ours(), floor()  # warm-up
    t_ours, t_floor = [], []
    for _ in range(args.reps):
        t_ours.append(timed(ours, device)[0])
        t_floor.append(timed(floor, device)[0])
    return {"refresh_s": statistics.median(t_ours), "floor_s": statistics.median(t_floor),
            "refresh_over_floor": statistics.median(a / b for a, b in zip(t_ours, t_floor)),
            "n_users": users.shape[0], "n_items": items.shape[0],
            "chunk_users": chunk_size_for(items.shape[0], args.refresh_mb, device)}


def bench_epochs(args, refresh_s: float, dns, dns_train) -> dict:
    """The ``_DNS`` variant's epochs (``dns``, the trainer (a) measured) against its base's, alternated; with
    ``--compile``, also the variant with its loss compiled (``dns_compile: true``), and the first epoch of
    each (the compile is in the compiled one's).

    Every round times one epoch of each arm and one refresh of the variant's pool on its tables as trained so far
    (what a refresh epoch runs), each in every position in turn; a round's ratio is ``(variant epoch + refresh /
    dns_n) / base epoch`` from that round alone, so the machine's drift from round to round cancels. The ratios
    reported are the medians over rounds (``epoch_ratio``); ``epoch_ratio_of_medians`` divides the medians of the
    times instead (with (a)'s refresh)."""
    _, bpr, bpr_train = _setup(args, args.base)
    arms = {"base": (bpr, bpr_train), "dns": (dns, dns_train)}
    if args.compile:
        _, compiled, compiled_train = _setup(args, args.base + "_DNS", dns_compile=True)
        arms["compiled"] = (compiled, compiled_train)
    device = dns.device
    model = dns.model
    # the refresh is kept out of the timed epochs (none is a multiple of dns_n) and timed apart in every round
    epochs = list(itertools.islice((e for e in itertools.count(1) if e % args.n), args.epochs + 1))
    first = {}
    for name, (trainer, train) in arms.items():  # warm-up
        if trainer is not bpr:
            trainer.model.on_epoch_start(0)
        first[name] = timed(lambda: trainer._train_epoch(train, epochs[0]), device)[0]
    t = {name: [] for name in [*arms, "refresh"]}
    names = list(t)
    for i, epoch in enumerate(epochs[1:]):
        assert not model.dns_pool.due(epoch)
        for name in names[i % len(names):] + names[: i % len(names)]:  # each in each position in turn
            if name == "refresh":
                t[name].append(timed(lambda: refresh(model), device)[0])
                continue
            trainer, train = arms[name]
            t[name].append(timed(lambda: trainer._train_epoch(train, epoch), device)[0])

    def ratio(arm: str) -> float:  # median over rounds of the round's amortised ratio
        return statistics.median((v + r / args.n) / b for v, r, b in zip(t[arm], t["refresh"], t["base"]))

    med = {name: statistics.median(times) for name, times in t.items()}
    out = {"base_epoch_s": med["base"], "dns_epoch_s": med["dns"], "refresh_in_rounds_s": med["refresh"],
           "dns_epoch_amortised_s": med["dns"] + med["refresh"] / args.n, "epoch_ratio": ratio("dns"),
           "epoch_ratio_of_medians": (med["dns"] + refresh_s / args.n) / med["base"],
           "refresh_share": statistics.median(r / args.n / b for r, b in zip(t["refresh"], t["base"])),
           "rounds": len(t["base"]), "times_s": t}
    if "compiled" in arms:
        out.update({"compiled_epoch_s": med["compiled"], "compiled_epoch_ratio": ratio("compiled"),
                    "first_epoch_s": first["dns"], "compiled_first_epoch_s": first["compiled"]})
    return out


def refresh_memory(args, trainer, train, mode: str) -> dict:
    """Peak memory of one refresh (``mode``: ``chunked`` or ``unchunked``) above the state just before it: the CUDA
    allocator's peak, or on the CPU the peak RSS (run it in a fresh process there: :func:`memory_child`)."""
    with torch.no_grad():
        users, items = (t.detach() for t in trainer.model.dns_tables())
    exclude = exclusion_matrix(train._dataset)
    device = trainer.device
    chunk = users.shape[0] if mode == "unchunked" else chunk_size_for(items.shape[0], args.refresh_mb, device)
    extra, _ = peak_extra_bytes(lambda: build_pool(users, items, exclude, args.k, "dissimilar", chunk), device)
    return {"extra_bytes": extra, "chunk_users": chunk}


def memory_child(args) -> None:
    """Child process: :func:`refresh_memory` on a fresh trainer (printed as JSON)."""
    _, trainer, train = _setup(args, args.base + "_DNS")
    print(json.dumps(refresh_memory(args, trainer, train, args.mem_child)))


def bench_memory(args, trainer, train) -> dict:
    """(c): on CUDA in this process (the allocator's peak is exact), on the CPU in a child process each."""
    out = {}
    for mode in ("chunked", "unchunked"):
        if trainer.device.type == "cuda":
            torch.cuda.empty_cache()
            out[mode] = refresh_memory(args, trainer, train, mode)["extra_bytes"] / 2**20
            continue
        cmd = [sys.executable, __file__, *sys.argv[1:], f"--mem-child={mode}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])["extra_bytes"] / 2**20
    return {"refresh_extra_mib": out["chunked"], "unchunked_extra_mib": out["unchunked"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--base", default="BPR", help="base model; its _DNS variant is compared to it")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--refresh_mb", type=float, default=256.0, help="dns_refresh_mb")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="(b) also with dns_compile: true")
    parser.add_argument("--fused", action="store_true", help="every arm with fused_optimizer: true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be >= 2: epochs are timed apart from the refresh, which is added back as refresh / n")
    if args.mem_child:
        memory_child(args)
        return
    _, trainer, train = _setup(args, args.base + "_DNS")
    res = {"base": args.base, "dataset": args.dataset, "fused_optimizer": args.fused,
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "k": args.k, "n": args.n, "batch_size": args.batch_size}
    res.update(bench_refresh(args, trainer, train))
    res.update(bench_epochs(args, res["refresh_s"], trainer, train))
    res.update(bench_memory(args, trainer, train))
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(
        f"\n{args.base}_DNS vs {args.base}, {args.dataset} ({res['n_users']} users x {res['n_items']} items, k={args.k}, n={args.n}, "
        f"batch {args.batch_size}, {res['device']}, {res['threads']} threads{', fused_optimizer' if args.fused else ''})\n"
        f"(a) refresh {res['refresh_s']:.3f} s vs floor {res['floor_s']:.3f} s: ratio {res['refresh_over_floor']:.2f} (target <= 1.5)\n"
        f"(b) epoch {args.base}_DNS {res['dns_epoch_s']:.3f} s + refresh/n {res['refresh_in_rounds_s'] / args.n:.3f} s vs "
        f"{args.base} {res['base_epoch_s']:.3f} s (medians of {res['rounds']} rounds): ratio {res['epoch_ratio']:.2f} "
        f"(median of the rounds' ratios; of which the refresh {res['refresh_share']:.3f}; target <= 1.2; issue 21: <= 1.1 "
        f"for BPR)\n"
        + (f"    with its loss compiled (dns_compile: true): {res['compiled_epoch_s']:.3f} s, ratio "
           f"{res['compiled_epoch_ratio']:.2f}; first epoch {res['compiled_first_epoch_s']:.2f} s compiling, "
           f"{res['first_epoch_s']:.2f} s eager\n" if "compiled_epoch_s" in res else "")
        + f"(c) refresh peak extra memory {res['refresh_extra_mib']:.0f} MiB (bound {args.refresh_mb:.0f} MiB; "
        f"unchunked {res['unchunked_extra_mib']:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
