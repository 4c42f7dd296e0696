"""``fused_optimizer: true`` against RecBole's Adam, side by side in one run.

    python benchmarks/bench_optimizer.py --dataset=amazon-beauty --data_path=../shared/datasets [--models BPR BPR_DNS]

For each model, two trainers on the same data (the mechanism as the paper has it for a ``_DNS`` model): one with
RecBole's Adam (torch's default single-tensor loop on the CPU), one with ``fused_optimizer: true``. Rounds of one
training epoch of each, the order alternated; the figure is the median over rounds of the fused epoch / the unfused
epoch (the machine's drift between rounds cancels). The ``_DNS`` model's refresh epochs are skipped (``bench_dns.py``
times the refresh).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from harness import add_data_args, timed, trainer_for  # this folder; puts the repository on sys.path


def bench(args: argparse.Namespace, model: str) -> dict:
    arms = {fused: trainer_for(args, model, {"fused_optimizer": fused}, paper=True)[1:] for fused in (False, True)}
    device = arms[False][0].device
    pool = getattr(arms[False][0].model, "dns_pool", None)
    for trainer, _ in arms.values():
        if pool is not None:
            trainer.model.on_epoch_start(0)  # the pool, built once
    epochs = [e for e in range(1, 4 * args.epochs + 4) if pool is None or not pool.due(e)][: args.epochs + 1]
    for trainer, train in arms.values():
        trainer._train_epoch(train, epochs[0])  # warm-up
    t = {False: [], True: []}
    for i, epoch in enumerate(epochs[1:]):
        for fused in ((False, True) if i % 2 == 0 else (True, False)):
            trainer, train = arms[fused]
            t[fused].append(timed(lambda: trainer._train_epoch(train, epoch), device)[0])
    return {"model": model, "unfused_epoch_s": statistics.median(t[False]), "fused_epoch_s": statistics.median(t[True]),
            "ratio": statistics.median(f / u for f, u in zip(t[True], t[False])), "rounds": len(t[True])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--models", nargs="+", default=["BPR", "BPR_DNS"])
    parser.add_argument("--epochs", type=int, default=8, help="rounds")
    args = parser.parse_args()
    rows = [bench(args, model) for model in args.models]
    print(json.dumps({"dataset": args.dataset, "device": args.device, "threads": torch.get_num_threads(), "rows": rows},
                     indent=1))
    print(f"\n{args.dataset}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads; s per training "
          f"epoch (medians over rounds)")
    print("| model | RecBole's Adam | fused_optimizer: true | fused / unfused (median of the rounds' ratios) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['unfused_epoch_s']:.3f} | {r['fused_epoch_s']:.3f} | **{r['ratio']:.2f}** |")


if __name__ == "__main__":
    main()
