"""Seconds per training epoch of a graph model with and without hard negatives, and what one propagation per
step saves: the pick scoring the step's own tables (as shipped) against the pick propagating tables of its own.

    python benchmarks/bench_hard_neg_graph.py --model=LightGCN --dataset=amazon-beauty --data_path=../shared/datasets
    python benchmarks/bench_hard_neg_graph.py --model=SimGCL --dataset=amazon-beauty --data_path=../shared/datasets
    python benchmarks/bench_hard_neg_graph.py --model=SGL --dataset=amazon-beauty --data_path=../shared/datasets

Rows: the base model; ``hard_neg: dns_mn`` with the hardest of ``--candidates`` (the pick scores the tables the
step's loss propagates, one propagation per step); the same with ``tables_from_forward`` off (the pick propagates
its own tables without gradient, as before; SGL's steps propagate augmented graphs, so its pick always propagates
the full graph on its own and this row is left out). Training epochs only, the rows alternated epoch by epoch, medians after
one untimed epoch; ratios to the base's epoch and between the two hard-negative rows.
"""

from __future__ import annotations

import argparse
import statistics

from harness import add_data_args, epoch_table, timed, trainer_for  # this folder; puts the repository on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="LightGCN", choices=["LightGCN", "SimGCL", "SGL", "LightGCN_DNS", "SimGCL_DNS"])
    add_data_args(parser)
    parser.add_argument("--candidates", type=int, default=64, help="hard_neg_m")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row (after one untimed)")
    args = parser.parse_args()
    hard = {"hard_neg": "dns_mn", "hard_neg_m": args.candidates, "hard_neg_n": 1}
    setups = {}
    for label, config in ((args.model, {}), ("hard negatives, as shipped", hard)):
        _, trainer, train = trainer_for(args, args.model, config)
        setups[label] = (trainer, train)
    if getattr(trainer.model, "tables_from_forward", False):  # SGL's pick propagates on its own already
        _, trainer, train = trainer_for(args, args.model, hard)
        trainer.model.tables_from_forward = False
        setups["hard negatives, their own propagation"] = (trainer, train)
    times: dict[str, list[float]] = {label: [] for label in setups}
    for epoch in range(args.epochs + 1):
        for label, (trainer, train) in setups.items():
            t, _ = timed(lambda: trainer._train_epoch(train, epoch), trainer.device)
            if epoch:
                times[label].append(t)
    med = {label: statistics.median(t) for label, t in times.items()}
    epoch_table(args, f"{args.model}, training epoch, median of {args.epochs}", med, {"vs the base": args.model},
                {"model": args.model})
    if "hard negatives, their own propagation" in med:
        one, own = med["hard negatives, as shipped"], med["hard negatives, their own propagation"]
        print(f"\nas shipped (one propagation) / their own propagation: {one / own:.2f}x")


if __name__ == "__main__":
    main()
