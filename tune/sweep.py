"""Ray Tune sweep of a recbole_dns / RecBole model; see the README, "Sweeps".

    python tune/sweep.py --model=BPR_DNS --dataset=ml-100k --space=tune/spaces/paper_nk.yaml --out=DIR
    python tune/sweep.py ... --address=auto          # on a running Ray cluster (ray start --head)
    python tune/sweep.py ... --resume                # continue an interrupted sweep in DIR

Writes DIR/trials.csv (one row per trial), DIR/best.yaml (the best trial's configuration:
`python run_recbole_dns.py --config_files=DIR/best.yaml` reproduces it) and, for an n x k grid,
DIR/fig2_ndcg_vs_n.png and DIR/fig2_ndcg_vs_k.png. Ray's own files are in DIR/ray/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recbole_dns.config import parse_set  # noqa: E402
from recbole_dns.errors import ConfigError  # noqa: E402
from recbole_dns.models import get_model  # noqa: E402
from recbole_dns.tune import load_space, run_sweep  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--space", required=True, help="search-space YAML (tune/spaces/*.yaml)")
    p.add_argument("--out", required=True, help="results directory")
    p.add_argument("--config_files", default=None, help="RecBole config files for every trial, separated by spaces")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config values for every trial")
    p.add_argument("--address", default=None, help="Ray cluster address (auto or host:port); default: a local Ray")
    p.add_argument("--num-samples", type=int, default=None, help="samples per grid point / random trials")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: as many as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--metric", default="ndcg@10", help="validation metric to optimise")
    p.add_argument("--mode", choices=["max", "min"], default="max")
    p.add_argument("--search", choices=["grid", "random"], default=None, help="default: the space's 'search'")
    p.add_argument("--asha", action="store_true", help="stop bad trials early (ASHA on the validation metric)")
    p.add_argument("--max-retries", type=int, default=1, help="retries of a crashed trial")
    p.add_argument("--resume", action="store_true", help="resume the sweep in --out")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    args = p.parse_args(argv)
    try:
        get_model(args.model)
        overrides = parse_set(args.set)
        files = args.config_files.split() if args.config_files else None
        for path in files or []:
            if not Path(path).is_file():
                raise ConfigError(f"config file not found: {path}")
        if not Path(args.space).is_file():
            raise ConfigError(f"search space not found: {args.space}")
        space = load_space(args.space)
    except (ConfigError, ValueError) as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    rows = run_sweep(
        args.model, args.dataset, space, args.out, address=args.address, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        metric=args.metric, mode=args.mode, search=args.search, asha=args.asha, max_retries=args.max_retries,
        resume=args.resume, config_files=files, overrides=overrides, verbose=0 if args.quiet else 1,
    )
    failed = [r for r in rows if r["status"] != "TERMINATED"]
    for r in failed:
        params = ", ".join(f"{k}={r[k]}" for k in sorted(space.get("params", {})))
        print(f"trial {r['trial_id']} ({params}) failed: {r['error']}")
    print(f"{len(rows)} trials, {len(failed)} failed; results in {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
