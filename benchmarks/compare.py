"""Train several models (or one model over a grid of config values) on one dataset and compare them.

    python benchmarks/compare.py --dataset=amazon-beauty --data_path=../shared/datasets \
        --models BPR BPR_DNS --set eval_step=5 --grid dns_tau=0.05,0.1,0.2

Every run uses the same seed, split (8:1:1 random, full ranking) and epoch budget with early stopping.
Prints a markdown table (best-validation epoch's test NDCG@10 / Recall@10 / MAP@10, epochs run,
seconds per training epoch) and writes it, with a CSV, to ``--out``. A run stopped by bad data or a bad
setting (a ``ConfigError``) gets its one-line reason in the table's ``error`` column; the others run on.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recbole_dns.config import parse_set, yaml_value  # noqa: E402
from recbole_dns.errors import ConfigError  # noqa: E402
from recbole_dns.quick_start import fit_and_test, prepare  # noqa: E402
from recbole_dns.tables import write_csv  # noqa: E402


def run_one(model: str, dataset: str, config: dict) -> dict:
    cfg, trainer, train, valid, test = prepare(model, dataset, None, config)
    start = time.perf_counter()

    def progress(epoch: int, score: float) -> None:
        print(f"   epoch {epoch}: valid {cfg['valid_metric']} {score:.4f}", flush=True)

    fitted = fit_and_test(trainer, train, valid, test, callback_fn=progress)
    best_valid, result = fitted["best_valid_result"], fitted["test_result"]
    wall = time.perf_counter() - start
    epoch_times = trainer.epoch_times
    os.remove(trainer.saved_model_file)
    return {
        "model": cfg["model"],
        "valid_ndcg@10": best_valid["ndcg@10"] if best_valid else float("nan"),
        "test_ndcg@10": result["ndcg@10"],
        "test_recall@10": result["recall@10"],
        "test_map@10": result["map@10"],
        "epochs": len(epoch_times),
        "s_per_epoch": sorted(epoch_times)[len(epoch_times) // 2] if epoch_times else float("nan"),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--models", nargs="+", default=["BPR", "BPR_DNS"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config for every run")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="config values to cross")
    parser.add_argument("--grid-models", nargs="*", default=None,
                        help="models the grid applies to (default: all); others run once")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default=None, help="file name stem of the table (default: dataset)")
    args = parser.parse_args(argv)

    base = {"show_progress": False, "state": "WARNING", "epochs": 300}
    if args.data_path:
        base["data_path"] = args.data_path
    base.update(parse_set(args.set))
    grid_keys = [g.partition("=")[0] for g in args.grid]
    grid_vals = [[yaml_value(v) for v in g.partition("=")[2].split(",")] for g in args.grid]

    rows = []
    for model in args.models:
        combos = [()]
        if grid_keys and (args.grid_models is None or model in args.grid_models):
            combos = list(itertools.product(*grid_vals))
        for combo in combos:
            extra = dict(zip(grid_keys, combo))
            print(f"== {model} {extra}", flush=True)
            try:
                row = run_one(model, args.dataset, {**base, **extra})
            except ConfigError as err:
                row = {"model": model, "error": f"{type(err).__name__}: {err}"}
            row.update({k: extra.get(k, "") for k in grid_keys})
            print(f"   {row}", flush=True)
            rows.append(row)

    cols = ["model", *grid_keys, "valid_ndcg@10", "test_ndcg@10", "test_recall@10", "test_map@10", "epochs", "s_per_epoch"]
    cols += ["error"] if any("error" in r for r in rows) else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = (r.get(c, "") for c in cols)
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    table = "\n".join(lines)
    print(f"\n{args.dataset}, settings {base}\n\n{table}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or args.dataset
    (out / f"{stem}.md").write_text(f"{args.dataset}, settings {base}\n\n{table}\n")
    write_csv(out / f"{stem}.csv", rows)
    return rows


if __name__ == "__main__":
    main()
