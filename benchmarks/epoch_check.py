"""One training epoch and one full-ranking validation of every model of this package, on one dataset.

    python benchmarks/epoch_check.py --dataset=yelp2018 --data_path=../shared/datasets   # CUDA if available
    python benchmarks/epoch_check.py --dataset=ml-100k --device cpu --models BPR BPR_DNS

The dataset and its split are built once (with the first model's config) and every model trains one
epoch on the same loaders (a ``_DNS`` model's epoch includes its first pool refresh), then is evaluated
on the validation split. Prints one line per model and, with ``--json``, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from harness import ROOT, sync  # this folder; puts the repository on sys.path

from recbole_dns.config import Config, with_dns_preset
from recbole_dns.models import PACKAGE_MODELS
from recbole_dns.quick_start import _create_dataset
from recbole_dns.trainer import get_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="yelp2018")
    parser.add_argument("--data_path", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--models", nargs="+", default=list(PACKAGE_MODELS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    base = {"show_progress": False, "state": "WARNING", "train_batch_size": args.batch_size, "epochs": 1,
            "use_gpu": args.device == "cuda", "gpu_id": "0" if args.device == "cuda" else ""}
    if args.data_path and os.path.isdir(os.path.join(args.data_path, args.dataset)):
        base["data_path"] = args.data_path
    start = time.perf_counter()
    config = Config(args.models[0], args.dataset, config_dict=base, read_cmd_line=False)
    init_seed(config["seed"], config["reproducibility"])
    dataset = _create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    load_s = time.perf_counter() - start
    print(f"{args.dataset}: {dataset.user_num - 1} users x {dataset.item_num - 1} items, "
          f"{dataset.inter_num} interactions; loaded and split in {load_s:.1f} s ({config['device']})", flush=True)
    rows = []
    for name in args.models:
        config = Config(name, args.dataset, config_dict=with_dns_preset(name, base),  # DNS from epoch 0
                        read_cmd_line=False)
        init_seed(config["seed"], config["reproducibility"])
        train.update_config(config)
        model = config.model_class(config, train._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"], config.model_class)(config, model)
        sync(config["device"])
        t0 = time.perf_counter()
        trainer._train_epoch(train, 0)
        sync(config["device"])
        t1 = time.perf_counter()
        result = trainer.evaluate(valid, load_best_model=False)
        sync(config["device"])
        t2 = time.perf_counter()
        row = {"model": name, "train_s": t1 - t0, "valid_s": t2 - t1, "valid_ndcg@10": float(result["ndcg@10"])}
        rows.append(row)
        print(f"  {name:<13} epoch {row['train_s']:7.2f} s   validation {row['valid_s']:6.2f} s   "
              f"valid NDCG@10 {row['valid_ndcg@10']:.4f}", flush=True)
        trainer.tensorboard.close()
        del trainer, model
        if config["device"].type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "device": str(config["device"]),
                                               "load_s": load_s, "models": rows}, indent=1))


if __name__ == "__main__":
    main()
