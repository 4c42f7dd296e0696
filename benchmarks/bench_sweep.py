"""Wall time of a 4-trial sweep run 2 at a time against the same 4 runs one after another.

    python benchmarks/bench_sweep.py [--epochs 5] [--dataset ml-100k]

The sweep: ``tune/sweep.py`` with a 4-value grid over ``dns_k``, ``--max-concurrent 2 --cpus-per-trial 1``
(each trial uses 1 torch thread). The baseline: the same 4 configurations with ``run_recbole_dns``,
sequentially, in one process with all cores. Prints both wall times and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KS = [20, 50, 100, 150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--model", default="BPR_DNS")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    fixed = {"epochs": args.epochs, "show_progress": False, "state": "WARNING"}
    if args.data_path:
        fixed["data_path"] = args.data_path
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(yaml.safe_dump({"search": "grid", "params": {"dns_k": {"grid": KS}}, "fixed": fixed}))
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "tune" / "sweep.py"), f"--model={args.model}", f"--dataset={args.dataset}",
             f"--space={space}", f"--out={tmp}/sweep", "--max-concurrent=2", "--cpus-per-trial=1", "--quiet"],
            check=True, cwd=tmp, stdout=subprocess.DEVNULL,
        )
        sweep_s = time.perf_counter() - start
        code = (
            "import sys; sys.path.insert(0, %r)\n"
            "from recbole_dns import run_recbole_dns\n"
            "for k in %r:\n"
            "    run_recbole_dns(model=%r, dataset=%r, config_dict={**%r, 'dns_k': k}, read_cmd_line=False)\n"
        ) % (str(ROOT), KS, args.model, args.dataset, fixed)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        seq_s = time.perf_counter() - start
    print(f"4 trials of {args.model} on {args.dataset}, {args.epochs} epochs each:")
    print(f"  sweep, 2 at a time (Ray, 1 CPU each): {sweep_s:.1f} s")
    print(f"  4 runs one after another:             {seq_s:.1f} s")
    print(f"  ratio sweep / sequential:             {sweep_s / seq_s:.2f}")


if __name__ == "__main__":
    main()
