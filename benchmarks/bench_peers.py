"""Seconds per training epoch of BPR_DNS as shipped and of the peers it was measured against, side by side.

    python benchmarks/bench_peers.py --dataset=amazon-beauty --data_path=../shared/datasets
    python benchmarks/bench_peers.py --dataset=gowalla --data_path=../shared/datasets --batch_size 8192 --epochs 3

Rows (each at the learning rate of docs/results.md, section 15; the rate does not change the cost):
BPR; BPR with RecBole's ``dynamic`` sampler (the highest-scored of ``--candidates`` uniform candidates, scored
through ``predict`` in the data loader); BPR with ``hard_neg: dns_mn`` (the same rule scored on the model's
tables); and BPR_DNS as shipped after its warm-up (the same hard negative, the band's pool and the DNS loss),
its refresh timed apart and amortised over ``dns_n`` epochs. Training epochs only (no validation), the rows
alternated epoch by epoch, medians; ratios to BPR's epoch and to the dynamic sampler's.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from harness import add_data_args, epoch_table, timed, trainer_for  # this folder; puts the repository on sys.path


def rows(candidates: int) -> dict[str, tuple[str, dict]]:
    """label -> (model, config) of the rows timed."""
    dynamic = {"distribution": "uniform", "sample_num": 1, "dynamic": True, "candidate_num": candidates}
    return {
        "BPR": ("BPR", {"learning_rate": 0.005}),
        f"RecBole dynamic ({candidates})": ("BPR", {"learning_rate": 0.005, "train_neg_sample_args": dynamic}),
        f"DNS(M,N), hardest of {candidates}": ("BPR", {"learning_rate": 0.005, "hard_neg": "dns_mn",
                                                      "hard_neg_m": candidates, "hard_neg_n": 1}),
        "BPR_DNS as shipped": ("BPR_DNS", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--candidates", type=int, default=64, help="candidate_num / hard_neg_m of the peers")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row (after one untimed)")
    args = parser.parse_args()
    setups = {}
    for label, (model, config) in rows(args.candidates).items():
        if model == "BPR_DNS":
            config = {**config, "hard_neg_m": args.candidates}
        cfg, trainer, train = trainer_for(args, model, config)
        if cfg["train_neg_sample_args"].get("dynamic"):
            train.get_model(trainer.model)  # what RecBole's Trainer.fit does for a dynamic sampler
        setups[label] = (cfg, trainer, train)
    _, dns, _ = setups["BPR_DNS as shipped"]
    pool = dns.model.dns_pool
    first = pool.start  # the first DNS epoch (after the warm-up), where the pool is built
    epochs = [e for e in range(first, first + 10 * pool.n) if (e - first) % pool.n][: args.epochs + 1]
    times: dict[str, list[float]] = {label: [] for label in setups}
    for i, epoch in enumerate([first, *epochs]):
        for label, (_, trainer, train) in setups.items():
            t, _ = timed(lambda: trainer._train_epoch(train, epoch), trainer.device)
            if i >= 2:  # the first is the refresh epoch of BPR_DNS, the second a warm-up for every row
                times[label].append(t)
    assert dns.model.dns_active and pool.refreshes == 1
    with torch.no_grad():
        users, items = dns.model.dns_tables()
    refresh = statistics.median(timed(lambda: pool.refresh(users, items, first), dns.device)[0] for _ in range(3))
    med = {label: statistics.median(t) for label, t in times.items()}
    med["BPR_DNS as shipped"] += refresh / pool.n
    epoch_table(args, f"training epoch, median of {args.epochs} (BPR_DNS: refresh {refresh:.2f} s / dns_n {pool.n} added)",
                med, {"vs BPR": "BPR", "vs RecBole dynamic": f"RecBole dynamic ({args.candidates})"},
                {"refresh_s": refresh, "dns_n": pool.n})


if __name__ == "__main__":
    main()
