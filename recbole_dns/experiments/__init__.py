"""The paper's study as one command: ``python -m recbole_dns.experiments EXPERIMENT --dataset=NAME ...``
(also ``recbole-dns experiments ...``): the experiments' registry, planning, running and the command line.

One module per experiment (its rows, its tables, figures and notes) on shared modules: :mod:`.runs` (one
run and the results on disk), :mod:`.scheduler` (running many), :mod:`.report` (rows of runs, tests, CSV and Markdown) and :mod:`.figures`.
An experiment module has ``NAME``, ``HELP`` (its line in ``--help``), ``STUDY`` (whether its DNS variants run
``--dns-preset``), ``rows(dataset, opts)``, ``report(out, groups, alpha, opts)`` and optionally
``setup(datasets, out, opts, run)``; adding one is a module and an entry in :data:`MODULES`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from recbole_dns.defaults import PAPER_PRESET, default, presets
from recbole_dns.experiments import ablation, diagnose, entropy, grid, models, samplers
from recbole_dns.experiments.ablation import check_variants
from recbole_dns.experiments.choosing import expand_choices
from recbole_dns.experiments.report import write_report
from recbole_dns.experiments.runs import BUDGETS, PROTOCOLS, RunSpec, plan_runs
from recbole_dns.experiments.scheduler import execute

#: the experiments, in the order of ``--help`` and of ``results.md``
MODULES = {m.NAME: m for m in (samplers, models, grid, entropy, diagnose, ablation)}
EXPERIMENTS = tuple(MODULES)


def plan(experiment: str, datasets: list[str], opts: dict) -> list[RunSpec]:
    """The runs of an experiment: one per dataset x row of its table (or grid point) x training seed."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    module = MODULES[experiment]
    # the paper's study runs the paper's DNS; an ablation's rows say what they run
    preset = opts.get("dns_preset", PAPER_PRESET) if module.STUDY else None
    return plan_runs(experiment, datasets, opts, lambda dataset: module.rows(dataset, opts), preset)


def run_experiment(experiment: str, datasets: list[str], out: str | Path, *, models: list[str] | None = None,
                   protocol: str = "full", seeds: int = 3, budget: str = "quick", overrides: dict | None = None,
                   data_path: str | None = None, test_sets: int = 10, negatives: int = 100, alpha: float = 0.01,
                   n_values: tuple = grid.N_VALUES, k_values: tuple = grid.K_VALUES, n_fixed: int = default("dns_n"),
                   k_fixed: int = default("dns_k"), address: str | None = None, use_ray: bool = True,
                   cpus_per_run: float = 1, parallel: int = 0, variants: dict | None = None,
                   dns_preset: str | None = PAPER_PRESET, command: str | None = None, train: bool = True) -> Path:
    """Run (or resume) an experiment and write ``OUT/results.md`` (all experiments written to OUT so far),
    ``OUT/<experiment>_*.csv`` and the figures. Returns the path of ``results.md``. ``train=False`` trains
    nothing: the report of the runs already on disk."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if dns_preset not in (*presets(), None):
        raise ValueError(f"dns_preset must be one of {', '.join(presets())} or None (each model's own defaults); "
                         f"got {dns_preset!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    out = Path(out).resolve()
    if data_path:
        data_path = str(Path(data_path).resolve())
    opts = dict(protocol=protocol, seeds=seeds, budget=budget, overrides=overrides or {}, data_path=data_path,
                test_sets=test_sets, negatives=negatives, models=models, n_values=n_values, k_values=k_values,
                n_fixed=n_fixed, k_fixed=k_fixed, variants=variants, dns_preset=dns_preset)
    run = dict(address=address, use_ray=use_ray, cpus_per_run=cpus_per_run, parallel=parallel, train=train)
    module = MODULES.get(experiment)
    if hasattr(module, "setup"):
        module.setup(datasets, out, opts, run)
    specs = plan(experiment, datasets, opts)
    execute(specs, out, **run)
    return write_report(experiment, module.report, specs, out, alpha, opts, command, EXPERIMENTS)


#: ``--dns-preset`` beyond the presets: each model's own defaults
OWN_DEFAULTS = "model"


def description() -> str:
    """The command's ``--help`` text: the experiments (each module's ``HELP``) and what every run shares."""
    items = ";\n".join(f"* ``{name}`` {module.HELP}" for name, module in MODULES.items()) + "."
    return ("The paper's study as one command: ``python -m recbole_dns.experiments EXPERIMENT --dataset=NAME ...``.\n\n"
            f"Experiments (RQ numbers as in the paper):\n\n{items}\n\n"
            "Every run trains on one fixed split (``seed``) with its own training seed, selects its best epoch on\n"
            "validation NDCG@10 only, and is tested under RecBole's full ranking and/or the paper's sampled test sets.\n"
            "Runs go in parallel through Ray and are resumable: a finished run's result stays in ``OUT/runs/``.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recbole_dns.experiments", description=description(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--dataset", nargs="+", default=["ml-100k"], help="one or more RecBole dataset names")
    p.add_argument("--data_path", default=None, help="folder with DATASET/DATASET.inter (default: RecBole's)")
    p.add_argument("--models", nargs="+", default=None,
                   help="models: the rows of `models`; the base model of `samplers`, `grid`, `entropy` (default BPR)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="full")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per model (one split)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    p.add_argument("--out", default="experiments", help="results folder (resumable)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config values for every run")
    p.add_argument("--test-sets", type=int, default=10, help="sampled protocol: number of test sets T")
    p.add_argument("--negatives", type=int, default=100, help="sampled protocol: negatives per user and test set")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level of the markers (after Holm)")
    p.add_argument("--n-values", type=int, nargs="+", default=list(grid.N_VALUES), help="grid: values of dns_n")
    p.add_argument("--k-values", type=int, nargs="+", default=list(grid.K_VALUES), help="grid: values of dns_k")
    p.add_argument("--n-fixed", type=int, default=default("dns_n"), help="grid: dns_n while k varies")
    p.add_argument("--k-fixed", type=int, default=default("dns_k"), help="grid: dns_k while n varies")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--cpus-per-run", type=float, default=1, help="CPUs (and torch threads) per training run")
    p.add_argument("--parallel", type=int, default=0, help="runs at once (default: as many as the CPUs allow)")
    p.add_argument("--no-ray", action="store_true", help="run one after another in this process")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the runs already in --out (missing ones are left out)")
    p.add_argument("--dns-preset", choices=[*presets(), OWN_DEFAULTS], default=PAPER_PRESET,
                   help=f"the DNS variants' setting in samplers, models, grid, entropy, diagnose: the paper's (default), "
                        f"{', '.join(name for name in presets() if name != PAPER_PRESET)}, or each model's own defaults ({OWN_DEFAULTS})")
    p.add_argument("--variants", default=None, help="ablation: YAML file with `reference` and `rows` (label, model, config)")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m recbole_dns.experiments EXPERIMENT --dataset=NAME [options]``; a bad argument
    exits 2 with one line."""
    import yaml

    from recbole_dns.config import parse_set
    from recbole_dns.errors import ConfigError

    p = parser()
    args = p.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        if args.seeds < 1 or args.test_sets < 1 or args.negatives < 1:
            raise ConfigError("--seeds, --test-sets and --negatives must be >= 1")
        variants = None
        if args.experiment == "ablation":
            if not args.variants or not Path(args.variants).is_file():
                raise ConfigError(f"ablation needs --variants FILE (a YAML file); got {args.variants!r}")
            variants = yaml.safe_load(Path(args.variants).read_text())
        command = "python -m recbole_dns.experiments " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        return run_experiment(
            args.experiment, args.dataset, args.out, models=args.models, protocol=args.protocol, seeds=args.seeds,
            budget=args.budget, overrides=overrides, data_path=args.data_path, test_sets=args.test_sets,
            negatives=args.negatives, alpha=args.alpha, n_values=tuple(args.n_values), k_values=tuple(args.k_values),
            n_fixed=args.n_fixed, k_fixed=args.k_fixed, address=args.address, use_ray=not args.no_ray,
            cpus_per_run=args.cpus_per_run, parallel=args.parallel, variants=variants,
            dns_preset=None if args.dns_preset == OWN_DEFAULTS else args.dns_preset, command=command,
            train=not args.report_only)
    except (ConfigError, ValueError) as err:
        p.exit(2, f"{p.prog}: error: {err}\n")


__all__ = ["EXPERIMENTS", "MODULES", "RunSpec", "check_variants", "expand_choices", "main", "plan", "run_experiment"]
