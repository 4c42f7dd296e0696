"""The paper's study as one command: ``python -m recbole_dns.experiments EXPERIMENT --dataset=NAME ...``.

Experiments (RQ numbers as in the paper):

* ``samplers`` (RQ1, Table 2) - BPR with its static random sampler against BPR_DNS with the dynamic
  random, similar and dissimilar pools: NDCG@10 and the false-negative rates of ``i-`` and ``i'-``;
* ``models`` (RQ2, Table 3) - PRIS, MixGCF and each base model with its ``_DNS`` variant;
* ``grid`` (RQ3, Figure 2) - BPR_DNS over ``n`` with ``k`` fixed and over ``k`` with ``n`` fixed;
* ``entropy`` (RQ4, Figure 3) - Eq. 6's entropy per epoch for BPR and BPR_DNS, with validation NDCG@10;
* ``diagnose`` - a base model and its DNS variant with every diagnostic on: false-negative rates, the
  contrastive negatives' share of the loss gradient, training loss and validation NDCG@10 per epoch and
  per second, item norm against popularity;
* ``ablation`` - the rows of a YAML file (``--variants``), each against a reference row; a row with
  ``choose`` (e.g. ``{learning_rate: [0.001, 0.005, 0.01]}``) is first trained at every value (``choose_seeds``
  seeds, default 1) and then compared at the value with the best validation NDCG@10 (per dataset), so a
  base and its DNS variants are tuned with the same number of trials on validation data only.

Every run trains on one fixed split (``seed``) with its own training seed, selects its best epoch on
validation NDCG@10 only, and is tested under RecBole's full ranking and/or the paper's sampled test sets.
Runs go in parallel through Ray and are resumable: a finished run's result stays in ``OUT/runs/``.
"""

from __future__ import annotations

import datetime
import itertools
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from recbole_dns.experiments.runs import BUDGETS, PROTOCOLS, RunSpec, execute

EXPERIMENTS = ("samplers", "models", "grid", "entropy", "diagnose", "ablation")

#: the paper's RQ3 values (Section 4.2)
N_VALUES = (1, 5, 10, 20, 30, 40, 50)
K_VALUES = (10, 50, 100, 150, 200, 250, 300)

#: ``--dns-preset`` of the paper's study (``samplers``, ``models``, ``grid``, ``entropy``, ``diagnose``): the DNS
#: variants run the paper's setting unless told otherwise (``model``: each model's own defaults)
DNS_PRESET_CHOICES = ("paper", "warmup_band")

#: short names of ``choose`` keys in the labels of an ablation's candidate rows
CHOOSE_NAMES = {"learning_rate": "lr", "reg_weight": "L2", "embedding_size": "d"}

#: the paper's Table 3 rows
MODELS = ("PRIS", "MixGCF", "BPR", "BPR_DNS", "LightGCN", "LightGCN_DNS", "SGL", "SGL_DNS", "SimGCL", "SimGCL_DNS")


def _spec(experiment: str, dataset: str, model: str, label: str, seed: int, config: dict, opts: dict,
          variant: dict | None = None) -> RunSpec:
    return RunSpec(experiment=experiment, dataset=dataset, model=model, label=label, seed=seed,
                   config=tuple(sorted(config.items())), protocol=opts["protocol"], test_sets=opts["test_sets"],
                   negatives=opts["negatives"], data_path=opts.get("data_path"), variant=variant or {})


def plan(experiment: str, datasets: list[str], opts: dict) -> list[RunSpec]:
    """The runs of an experiment: one per dataset x row of its table (or grid point) x training seed."""
    from recbole_dns import models as registry
    from recbole_dns.config import with_dns_preset

    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    base_cfg = {**BUDGETS[opts["budget"]], **opts.get("overrides", {})}
    chosen = opts.get("models") or []
    # the paper's study runs the paper's DNS; an ablation's rows say what they run
    preset = None if experiment == "ablation" else opts.get("dns_preset", "paper")
    specs: list[RunSpec] = []
    for dataset in datasets:
        for seed in range(opts["seeds"]):
            def add(model: str, label: str, extra: dict | None = None, variant: dict | None = None) -> None:
                cfg = with_dns_preset(model, {**base_cfg, **(extra or {})}, preset)
                specs.append(_spec(experiment, dataset, model, label, seed, cfg, opts, variant))

            if experiment == "samplers":
                base = chosen[0] if chosen else "BPR"
                variant_name = registry.dns_variant(base)
                add(base, f"static random ({base})", {"log_fn_rate": True}, {"dns_sampler": None})
                for sampler in ("random", "similar", "dissimilar"):
                    add(variant_name, f"dynamic {sampler}", {"log_fn_rate": True, "dns_sampler": sampler},
                        {"dns_sampler": sampler})
            elif experiment == "models":
                for model in chosen or MODELS:
                    registry.get_model(model)
                    add(model, model)
            elif experiment == "grid":
                model = registry.dns_variant(chosen[0]) if chosen else "BPR_DNS"
                k_fixed, n_fixed = opts["k_fixed"], opts["n_fixed"]
                for n, k in [(n, k_fixed) for n in opts["n_values"]] + [(n_fixed, k) for k in opts["k_values"]]:
                    add(model, f"{model} n={n} k={k}", {"dns_n": n, "dns_k": k}, {"dns_n": n, "dns_k": k})
            elif experiment == "diagnose":
                watch = {"log_fn_rate": True, "log_grad_share": True}
                for base in chosen or ["BPR"]:
                    add(base, base, watch)
                    add(registry.dns_variant(base), registry.dns_variant(base), watch)
            elif experiment == "ablation":
                chosen_rows = opts.get("chosen", {}).get(dataset)
                for row in chosen_rows.values() if chosen_rows is not None else opts["variants"]["rows"]:
                    registry.get_model(row["model"])
                    extra = {**(row.get("config") or {}), **((row.get("datasets") or {}).get(dataset) or {})}
                    add(row["model"], row["label"], extra, {"row": row["label"]})
            elif experiment == "entropy":
                base = chosen[0] if chosen else "BPR"
                no_stop = {"log_entropy": True, "eval_step": 1, "stopping_step": int(base_cfg["epochs"]) + 1}
                add(base, base, no_stop)
                add(registry.dns_variant(base), registry.dns_variant(base), no_stop)
    return specs


def run_experiment(experiment: str, datasets: list[str], out: str | Path, *, models: list[str] | None = None,
                   protocol: str = "full", seeds: int = 3, budget: str = "quick", overrides: dict | None = None,
                   data_path: str | None = None, test_sets: int = 10, negatives: int = 100, alpha: float = 0.01,
                   n_values: tuple = N_VALUES, k_values: tuple = K_VALUES, n_fixed: int = 10, k_fixed: int = 100,
                   address: str | None = None, use_ray: bool = True, cpus_per_run: float = 1, parallel: int = 0,
                   variants: dict | None = None, dns_preset: str | None = "paper", command: str | None = None) -> Path:
    """Run (or resume) an experiment and write ``OUT/results.md`` (all experiments written to OUT so far),
    ``OUT/<experiment>_*.csv`` and the figures. Returns the path of ``results.md``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if dns_preset not in (*DNS_PRESET_CHOICES, None):
        raise ValueError(f"dns_preset must be one of {', '.join(DNS_PRESET_CHOICES)} or None (each model's own defaults); "
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
    run = dict(address=address, use_ray=use_ray, cpus_per_run=cpus_per_run, parallel=parallel)
    if experiment == "ablation":
        check_variants(variants)
        if any(row.get("choose") for row in variants["rows"]):
            opts["chosen"], opts["choices"] = choose(datasets, out, opts, run)
    specs = plan(experiment, datasets, opts)
    execute(specs, out, **run)
    return write_report(experiment, specs, out, alpha, opts, command)


def expand_choices(row: dict) -> list[dict]:
    """An ablation row with ``choose`` (key -> values) as one candidate row per combination of values, labelled
    ``"LABEL lr 0.001 ..."``; a row without ``choose`` as itself."""
    choose_ = row.get("choose") or {}
    if not choose_:
        return [row]
    keys = list(choose_)
    rows = []
    for combo in itertools.product(*(choose_[k] for k in keys)):
        names = [f"{CHOOSE_NAMES.get(k, k)} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else f"{CHOOSE_NAMES.get(k, k)} {v}" for k, v in zip(keys, combo)]
        rows.append({**{k: v for k, v in row.items() if k != "choose"}, "label": " ".join([row["label"], *names]),
                     "config": {**(row.get("config") or {}), **dict(zip(keys, combo))}})
    return rows


def choose(datasets: list[str], out: Path, opts: dict, run: dict) -> tuple[dict, dict]:
    """Train every candidate of the rows with ``choose`` (``choose_seeds`` seeds) and pick, per dataset and
    row, the candidate with the best mean validation NDCG@10. Returns ``{dataset: {row label: row}}`` (the
    candidate in place of a row with ``choose``) and ``{dataset: {row label: [(candidate, valid NDCG@10)]}}``."""
    from recbole_dns.experiments import report

    rows = opts["variants"]["rows"]
    seeds = int(opts["variants"].get("choose_seeds", 1))
    candidates = [c for row in rows if row.get("choose") for c in expand_choices(row)]
    specs = plan("ablation", datasets, {**opts, "seeds": seeds, "variants": {**opts["variants"], "rows": candidates}})
    print(f"choosing on validation: {len(candidates)} candidate row(s) x {seeds} seed(s) per dataset", flush=True)
    execute(specs, out, **run)
    groups, _ = report.gather(out, specs)
    valid = {(g.dataset, g.label): g.mean_of_valid("ndcg@10") for g in groups}
    chosen: dict = {}
    scores: dict = {}
    for dataset in datasets:
        chosen[dataset], scores[dataset] = {}, {}
        for row in rows:
            if not row.get("choose"):
                chosen[dataset][row["label"]] = row
                continue
            scored = [(c, valid.get((dataset, c["label"]), float("nan"))) for c in expand_choices(row)]
            scores[dataset][row["label"]] = [(c["label"], v) for c, v in scored]
            finite = [(c, v) for c, v in scored if v == v]
            if finite:  # a row whose candidates all failed is left out (the failures are listed in the report)
                chosen[dataset][row["label"]] = max(finite, key=lambda cv: cv[1])[0]
    return chosen, scores


def write_report(experiment: str, specs: list[RunSpec], out: Path, alpha: float, opts: dict, command: str | None) -> Path:
    """The experiment's section of ``results.md``, its CSV files and figures, from the results on disk."""
    import json

    from recbole_dns.experiments import report

    groups, errors = report.gather(out, specs)
    report.write_csvs(out, experiment, groups)
    budget = {**BUDGETS[opts["budget"]], **opts.get("overrides", {})}
    head = [f"## {experiment}", "",
            f"Command: `{command or 'run_experiment(...)'}`  ",
            f"Budget `{opts['budget']}`: {json.dumps(budget)}; {opts['seeds']} training seed(s) on one split "
            f"(RecBole's 8:1:1 random split, `seed` {budget.get('seed', 2020)}); best epoch by validation NDCG@10; "
            f"protocol `{opts['protocol']}`" + (f" ({opts['test_sets']} sampled test sets of {opts['negatives']} negatives per user)"
                                               if opts["protocol"] != "full" else "") + ".  ",
            f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.machine()} ({_torch_version()}). "
            f"Values: mean ± standard deviation over seeds; markers at Holm-adjusted p < {alpha} (paired t-test over users, "
            "each user's value averaged over seeds and test sets).", ""]
    body: list[str] = []
    pvals: list[dict] = []
    if experiment == "samplers":
        table, pvals = report.samplers_table(out, groups, alpha)
        body.append(table)
        body.append("\n`*`: NDCG@10 differs significantly from the dynamic dissimilar sampler's. F-N rate: share of "
                    "training instances whose negative is one of the user's test items, averaged over training.")
        body += _expected_fn_rates(groups)
    elif experiment == "models":
        table, pvals = report.models_table(out, groups, alpha)
        body.append(table)
        body.append("\n`*` on a base model: its DNS variant differs significantly from it (on PRIS and MixGCF: the "
                    "best DNS variant does); `†` on a DNS variant: it differs significantly from every other DNS "
                    "variant of the table. Each table is one family for Holm's correction.")
    elif experiment == "grid":
        fixed = {"dns_n": opts["n_fixed"], "dns_k": opts["k_fixed"]}
        body += _table_and_figures(report.grid_table(out, groups, fixed), report.grid_figures(groups, out, fixed))
    elif experiment == "ablation":
        reference = opts["variants"]["reference"]
        if opts.get("chosen"):
            reference = {d: rows[reference]["label"] for d, rows in opts["chosen"].items() if reference in rows}
            body.append(_choices_table(opts))
        table, pvals = report.ablation_table(out, groups, reference, alpha)
        body.append(table)
        body.append(f"\n`*`: differs significantly from the reference row `{opts['variants']['reference']}` "
                    "(paired t-test over users, Holm over the rows x metrics of the table).")
        body.append("\nRows: " + "; ".join(f"`{r['label']}`: {r['model']} {json.dumps(r.get('config') or {})}"
                                            + (f" per dataset {json.dumps(r['datasets'])}" if r.get("datasets") else "")
                                            + (f", choose {json.dumps(r['choose'])}" if r.get("choose") else "")
                                            for r in opts["variants"]["rows"]))
        body += _figures(report.quality_figures(groups, out))
    elif experiment == "diagnose":
        body += _table_and_figures(report.diagnose_table(groups), report.diagnose_figures(out, groups))
        body.append("\nF-N rate: share of training instances whose negative is a test item of the user. i'- share: "
                    "per instance, the softmax weight of the contrastive negative(s) over the weight of all the "
                    "negatives (the gradient the loss sends through each negative is proportional to its weight), "
                    "averaged over training. rho: Spearman correlation of item norm (the scoring tables) and training "
                    "popularity at the best epoch.")
    elif experiment == "entropy":
        body += _table_and_figures(report.entropy_table(groups), report.entropy_figures(groups, out))
        body.append("\nEntropy (Eq. 6, `recbole_dns.embedding_entropy`): the users' rows and one row per training "
                    "instance's negative (BPR: its static random negative; the DNS variant: its contrastive negative "
                    "only), softmax over each row's coordinates, summed, divided by d; early stopping off.")
    if errors:
        body.append("\nRuns that failed: " + "; ".join(f"{e['spec']['dataset']} {e['spec']['label']} seed "
                                                       f"{e['spec']['seed']}: {e['error']}" for e in errors))
    if pvals:
        import csv

        with open(out / f"{experiment}_pvalues.csv", "w", newline="") as f:
            fields: list[str] = []
            for row in pvals:
                fields += [k for k in row if k not in fields]
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(pvals)
    section = "\n".join(head + body) + "\n"
    (out / f"{experiment}.md").write_text(section)
    parts = [p.read_text() for e in EXPERIMENTS if (p := out / f"{e}.md").is_file()]
    results = out / "results.md"
    results.write_text("# recbole-dns experiments\n\n" + "\n".join(parts))
    print(section)
    return results


def check_variants(variants: Any) -> None:
    """An ablation's YAML: ``reference`` (a row label) and ``rows``, each with ``label`` and ``model``."""
    from recbole_dns.errors import ConfigError

    if not isinstance(variants, dict) or not isinstance(variants.get("rows"), list) or not variants["rows"]:
        raise ConfigError("ablation variants must be a mapping with a non-empty list `rows` (label, model, config)")
    labels = []
    for row in variants["rows"]:
        if not isinstance(row, dict) or not {"label", "model"} <= set(row):
            raise ConfigError(f"every ablation row needs `label` and `model`; got {row!r}")
        labels.append(row["label"])
    if len(set(labels)) != len(labels):
        raise ConfigError(f"ablation row labels must be unique; got {labels}")
    for row in variants["rows"]:
        choose_ = row.get("choose")
        if choose_ is not None and (not isinstance(choose_, dict) or not choose_
                                    or not all(isinstance(v, list) and v for v in choose_.values())):
            raise ConfigError(f"ablation row {row['label']!r}: `choose` must map config keys to non-empty lists of "
                              f"values, e.g. {{learning_rate: [0.001, 0.01]}}; got {choose_!r}")
    every = labels + [c["label"] for row in variants["rows"] if row.get("choose") for c in expand_choices(row)]
    if len(set(every)) != len(every):
        raise ConfigError(f"ablation row labels and the labels of their `choose` candidates must be unique; got {every}")
    seeds = variants.get("choose_seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"ablation `choose_seeds` must be an integer >= 1; got {seeds!r}")
    if variants.get("reference") not in labels:
        raise ConfigError(f"ablation `reference` must be one of the row labels {labels}; got {variants.get('reference')!r}")


def _choices_table(opts: dict) -> str:
    """The candidates of the rows with ``choose``, their validation NDCG@10 and the chosen one (bold)."""
    seeds = int(opts["variants"].get("choose_seeds", 1))
    lines = [f"Chosen on validation (best validation NDCG@10, mean of {seeds} seed(s); the chosen candidate in bold):", "",
             "| dataset | row | validation NDCG@10 of each candidate |", "|---|---|---|"]
    for dataset, rows in opts["choices"].items():
        for label, scored in rows.items():
            pick = opts["chosen"][dataset].get(label, {}).get("label")
            cells = "; ".join((f"**{c}: {v:.4f}**" if c == pick else f"{c}: {v:.4f}") for c, v in scored)
            lines.append(f"| {dataset} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


def _figures(figures: list[Path]) -> list[str]:
    """Figures as Markdown images (the figures sit beside ``results.md``)."""
    return [f"\n![{f.stem}]({f.name})" for f in figures]


def _table_and_figures(table: str, figures: list[Path]) -> list[str]:
    """A table followed by its figures."""
    return [table] + _figures(figures)


def _expected_fn_rates(groups: list) -> list[str]:
    lines = []
    for g in groups:
        exp = [r.get("expected_fn_rate_static") for r in g.results if r.get("expected_fn_rate_static") is not None]
        if exp and g.variant.get("dns_sampler") is None:
            lines.append(f"\nExpected F-N rate of the static sampler on {g.dataset}, from the split alone: "
                         f"{sum(exp) / len(exp) * 100:.4f}% (measured {g.fn_rate('static') * 100:.4f}%).")
    return lines


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m recbole_dns.experiments EXPERIMENT --dataset=NAME [options]``."""
    import argparse

    import yaml

    from recbole_dns.errors import ConfigError

    p = argparse.ArgumentParser(prog="python -m recbole_dns.experiments", description=__doc__,
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
    p.add_argument("--n-values", type=int, nargs="+", default=list(N_VALUES), help="grid: values of dns_n")
    p.add_argument("--k-values", type=int, nargs="+", default=list(K_VALUES), help="grid: values of dns_k")
    p.add_argument("--n-fixed", type=int, default=10, help="grid: dns_n while k varies")
    p.add_argument("--k-fixed", type=int, default=100, help="grid: dns_k while n varies")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--cpus-per-run", type=float, default=1, help="CPUs (and torch threads) per training run")
    p.add_argument("--parallel", type=int, default=0, help="runs at once (default: as many as the CPUs allow)")
    p.add_argument("--no-ray", action="store_true", help="run one after another in this process")
    p.add_argument("--dns-preset", choices=[*DNS_PRESET_CHOICES, "model"], default="paper",
                   help="the DNS variants' setting in samplers, models, grid, entropy, diagnose: the paper's (default), "
                        "warmup_band, or each model's own defaults (model)")
    p.add_argument("--variants", default=None, help="ablation: YAML file with `reference` and `rows` (label, model, config)")
    args = p.parse_args(argv)
    try:
        overrides: dict[str, Any] = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set takes KEY=VALUE; got {item!r}")
            overrides[key] = yaml.safe_load(value)
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
            dns_preset=None if args.dns_preset == "model" else args.dns_preset, command=command)
    except (ConfigError, ValueError) as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
