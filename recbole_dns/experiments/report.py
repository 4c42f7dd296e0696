"""What every experiment's report shares: finished runs grouped into table rows (:class:`Group`), paired
t-tests across training seeds (the markers; over users as a secondary figure) with Holm's correction per
table (:class:`Family`), cells, the CSV files and the Markdown section (``OUT/<experiment>.md``, gathered
into ``OUT/results.md``)."""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from recbole_dns.experiments.runs import BUDGETS, METRIC_KEYS, RunSpec, load_per_user, load_result
from recbole_dns.stats import SeedTest, fmt, holm, mean_std, paired_ttest, seed_test
from recbole_dns.tables import write_csv

#: an experiment's part of its report: ``(out, groups, alpha, opts) -> (Markdown lines, p-value rows)``
Section = Callable[[Path, list["Group"], float, dict], tuple[list[str], list[dict]]]


@dataclass
class Group:
    """The finished runs (one per seed) of one row of a table: a dataset and a label."""

    dataset: str
    label: str
    model: str
    variant: dict
    results: list[dict]

    def seed_means(self, protocol: str, metric: str) -> list[float]:
        """One value per seed: the test metric (for ``sampled``, the mean over the test sets)."""
        return list(self.by_seed(protocol, metric).values())

    def by_seed(self, protocol: str, metric: str) -> dict[int, float]:
        """``{training seed: test metric}`` (for ``sampled``, the mean over the test sets)."""
        return {int(r["spec"]["seed"]): float(np.mean([t[metric] for t in r["tests"] if t["protocol"] == protocol]))
                for r in self.results if any(t["protocol"] == protocol for t in r["tests"])}

    def valid_by_seed(self, metric: str) -> dict[int, float]:
        """``{training seed: validation metric at the selected epoch}``."""
        return {int(r["spec"]["seed"]): float(r["valid"][metric]) for r in self.results if metric in r.get("valid", {})}

    def summary(self, protocol: str, metric: str) -> tuple[float, float]:
        return mean_std(self.seed_means(protocol, metric)) if self.seed_means(protocol, metric) else (np.nan, 0.0)

    def set_spread(self, protocol: str, metric: str) -> float:
        """Standard deviation over the sampled test sets (mean over seeds)."""
        per_seed = [np.std([t[metric] for t in r["tests"] if t["protocol"] == protocol], ddof=1) for r in self.results]
        per_seed = [s for s in per_seed if np.isfinite(s)]
        return float(np.mean(per_seed)) if per_seed else 0.0

    def per_user(self, out: Path, protocol: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Each user's value averaged over the seeds: ``(users, values)``."""
        arrays, users = [], None
        for r in self.results:
            data = load_per_user(out, r["run_id"]).get(protocol)
            if data is None:
                return None
            if users is not None and not np.array_equal(users, data["users"]):
                raise ValueError(f"runs of {self.label} on {self.dataset} were tested on different users")
            users = data["users"]
            arrays.append(data[metric.split("@")[0]])
        return (users, np.mean(arrays, axis=0)) if arrays else None

    def mean_of(self, key: str) -> float:
        vals = [r.get(key) for r in self.results if isinstance(r.get(key), (int, float))]
        return float(np.mean(vals)) if vals else np.nan

    def mean_of_valid(self, metric: str) -> float:
        """The validation metric at the selected (best) epoch, averaged over seeds."""
        vals = [r["valid"][metric] for r in self.results if metric in r.get("valid", {})]
        return float(np.mean(vals)) if vals else np.nan

    def fn_rate(self, kind: str) -> float:
        vals = [r.get("fn_rates", {}).get(f"fn_rate_{kind}") for r in self.results]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else np.nan


def gather(out: Path, specs: list[RunSpec]) -> tuple[list[Group], list[dict]]:
    """Finished runs grouped by (dataset, label) in the order of ``specs``, and the errored ones."""
    groups: dict[tuple[str, str], Group] = {}
    errors = []
    for spec in dict.fromkeys(specs):
        result = load_result(out, spec)
        key = (spec.dataset, spec.label)
        group = groups.setdefault(key, Group(spec.dataset, spec.label, spec.model, spec.variant, []))
        if result is None:
            continue
        if result.get("status") == "ok":
            group.results.append(result)
        else:
            errors.append(result)
    return [g for g in groups.values() if g.results], errors


def compare(out: Path, a: Group, b: Group, protocol: str, metric: str) -> float:
    """p-value of the paired t-test across training seeds (each seed's test metric, paired by seed): the
    evidence behind every marker. ``nan`` with fewer than two common seeds."""
    return seed_test(b.by_seed(protocol, metric), a.by_seed(protocol, metric)).p


def change(a: Group, b: Group, protocol: str, metric: str) -> SeedTest:
    """``b`` against ``a`` across seeds: relative change of the test metric with its 95% interval, and p."""
    return seed_test(b.by_seed(protocol, metric), a.by_seed(protocol, metric))


def change_text(test: SeedTest) -> str:
    """``+6.7% [+2.1, +11.3]`` (the interval when there are two seeds or more)."""
    if not np.isfinite(test.change):
        return ""
    interval = f" [{test.low * 100:+.1f}, {test.high * 100:+.1f}]" if np.isfinite(test.low) else ""
    return f"{test.change * 100:+.1f}%{interval}"


def with_seed_and_user_tests(out: Path, groups: list[Group], row: dict) -> dict:
    """A p-value CSV row (``dataset``, ``protocol``, ``a``, ``b``, ``metric``, Holm's ``p_holm`` of the seed test)
    with the seeds compared, ``b``'s relative change over ``a`` and its 95% interval, and the user-level p."""
    by_label = {(g.dataset, g.label): g for g in groups}
    a, b = by_label.get((row["dataset"], row["a"])), by_label.get((row["dataset"], row["b"]))
    if a is None or b is None:
        return row
    test = change(a, b, row["protocol"], row["metric"])
    return {**row, "seeds": test.n, "change": test.change, "change_low95": test.low, "change_high95": test.high,
            "p_users": compare_users(out, a, b, row["protocol"], row["metric"])}


def compare_users(out: Path, a: Group, b: Group, protocol: str, metric: str) -> float:
    """p-value of the paired t-test over users (values averaged over seeds, and over test sets if sampled): it
    counts users, not training runs; a secondary figure, in the p-value CSV files only."""
    pa, pb = a.per_user(out, protocol, metric), b.per_user(out, protocol, metric)
    if pa is None or pb is None:
        return np.nan
    if not np.array_equal(pa[0], pb[0]):
        raise ValueError(f"{a.label} and {b.label} were tested on different users")
    return paired_ttest(pa[1], pb[1])[1]


class Family:
    """The comparisons of one table: p-values collected, then corrected together with Holm's method."""

    def __init__(self) -> None:
        self.raw: dict[Any, float] = {}

    def add(self, key: Any, p: float) -> None:
        self.raw[key] = p

    @staticmethod
    def holm_of(pvalues: list[float]) -> list[float]:
        """Holm-adjusted ``pvalues`` (``nan`` kept in place)."""
        family = Family()
        for i, p in enumerate(pvalues):
            family.add(i, p)
        adj = family.adjusted()
        return [adj[i] for i in range(len(pvalues))]

    def adjusted(self) -> dict[Any, float]:
        keys = [k for k, p in self.raw.items() if np.isfinite(p)]
        adj = holm([self.raw[k] for k in keys])
        return {**{k: np.nan for k in self.raw}, **dict(zip(keys, adj))}


def protocols_of(groups: list[Group]) -> list[str]:
    found = {t["protocol"] for g in groups for r in g.results for t in r["tests"]}
    return [p for p in ("full", "sampled") if p in found]


def datasets_of(groups: list[Group]) -> list[str]:
    """The groups' datasets, in order."""
    return list(dict.fromkeys(g.dataset for g in groups))


def cell(group: Group, protocol: str, metric: str, marker: str = "") -> str:
    """``mean ± std`` over seeds of a test metric (and the spread over sampled test sets)."""
    mean, std = group.summary(protocol, metric)
    text = fmt(mean, std, marker)
    if protocol == "sampled":
        text += f" (sets ± {group.set_spread(protocol, metric):.4f})"
    return text


def best_valid(group: Group) -> float:
    """The best validation NDCG@10 of a row's training curve, averaged over its seeds (nan without curves)."""
    bests = [max(c["valid_ndcg@10"] for c in r["curve"]) for r in group.results if r.get("curve")]
    return float(np.mean(bests)) if bests else np.nan


def reach(group: Group, target: float) -> str:
    """Epochs and seconds (training and validation) until validation NDCG@10 first reaches ``target``, averaged
    over the seeds that reach it: ``"12.0 / 40 s"``, ``"... (2 of 3 seeds)"`` or ``"not reached"``."""
    hits = [next(((c["epoch"] + 1, c["time_s"]) for c in r.get("curve", []) if c["valid_ndcg@10"] >= target), None)
            for r in group.results]
    hit = [x for x in hits if x is not None]
    if not hit or not np.isfinite(target):
        return "not reached"
    return (f"{np.mean([e for e, _ in hit]):.1f} / {np.mean([t for _, t in hit]):.0f} s"
            + (f" ({len(hit)} of {len(hits)} seeds)" if len(hit) < len(hits) else ""))


def best_epoch_text(group: Group) -> str:
    """The mean selected epoch, and in how many seeds validation was still at its best at the last evaluation
    (training ended by the epoch cap while still improving: the budget, not the method, set the result)."""
    capped = [bool(r.get("curve")) and max(r["curve"], key=lambda c: c["valid_ndcg@10"]) is r["curve"][-1]
              for r in group.results]
    note = f" (rising at the cap: {sum(capped)} of {len(capped)})" if any(capped) else ""
    return f"{group.mean_of('best_epoch'):.0f}{note}"


def best_epochs(group: Group) -> str:
    """The best validation NDCG@10 of each seed's curve, ``mean ± std (mean epoch)``."""
    best = [max(r["curve"], key=lambda c: c["valid_ndcg@10"]) for r in group.results if r["curve"]]
    return f"{fmt(*mean_std([b['valid_ndcg@10'] for b in best]))} ({np.mean([b['epoch'] for b in best]):.0f})"


# ---- files ---------------------------------------------------------------------------------------------
def write_csvs(out: Path, experiment: str, groups: list[Group]) -> None:
    """``runs.csv`` (a row per model x seed x test set), ``per_user.csv``, ``per_epoch.csv`` of this experiment."""
    run_rows, user_rows, epoch_rows = [], [], []
    for g in groups:
        for r in g.results:
            seed = r["spec"]["seed"]
            base = {"experiment": experiment, "dataset": g.dataset, "label": g.label, "model": g.model, "seed": seed,
                    **g.variant}
            fn = r.get("fn_rates", {})
            for t in r["tests"]:
                run_rows.append({**base, "protocol": t["protocol"], "test_set": t["test_set"],
                                 **{m: t[m] for m in METRIC_KEYS}, "valid_ndcg@10": r["valid"].get("ndcg@10"),
                                 "best_epoch": r["best_epoch"], "epochs": r["epochs"], "train_s": round(r["train_s"], 2),
                                 "fn_rate_static": fn.get("fn_rate_static"), "fn_rate_dns": fn.get("fn_rate_dns")})
            for protocol, data in load_per_user(out, r["run_id"]).items():
                if protocol == "items":
                    continue
                for i, u in enumerate(data["users"]):
                    user_rows.append({**base, "protocol": protocol, "user_id": int(u),
                                      **{f"{m}@10": float(data[m][i]) for m in ("ndcg", "recall", "map") if m in data}})
            diag = {d["epoch"]: d for d in r.get("diagnostics", [])}
            for c in r["curve"]:
                epoch_rows.append({**base, "epoch": c["epoch"], "valid_ndcg@10": c["valid_ndcg@10"], "time_s": round(c["time_s"], 2),
                                   **{k: v for k, v in diag.get(c["epoch"], {}).items() if k != "epoch"}})
            for e, d in diag.items():
                if not any(c["epoch"] == e for c in r["curve"]):
                    epoch_rows.append({**base, "epoch": e, **{k: v for k, v in d.items() if k != "epoch"}})
    for name, rows in (("runs", run_rows), ("per_user", user_rows), ("per_epoch", epoch_rows)):
        write_csv(out / f"{experiment}_{name}.csv", rows, ["experiment"])


def write_report(experiment: str, section: Section, specs: list[RunSpec], out: Path, alpha: float, opts: dict,
                 command: str | None, order: Sequence[str]) -> Path:
    """The experiment's CSV files, its section ``OUT/<experiment>.md`` (the common head, ``section``'s tables,
    figures and notes, the failed runs) and ``OUT/results.md``: every section written to OUT so far, in
    ``order``. Returns the path of ``results.md``."""
    groups, errors = gather(out, specs)
    write_csvs(out, experiment, groups)
    budget = {**BUDGETS[opts["budget"]], **opts.get("overrides", {})}
    head = [f"## {experiment}", "",
            f"Command: `{command or 'run_experiment(...)'}`  ",
            f"Budget `{opts['budget']}`: {json.dumps(budget)}; {opts['seeds']} training seed(s) on one split "
            f"(RecBole's 8:1:1 random split, `seed` {budget.get('seed', 2020)}); best epoch by validation NDCG@10; "
            f"protocol `{opts['protocol']}`" + (f" ({opts['test_sets']} sampled test sets of {opts['negatives']} negatives per user)"
                                               if opts["protocol"] != "full" else "") + ".  ",
            f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.machine()} ({_torch_version()}). "
            f"Values: mean ± standard deviation over seeds; markers at Holm-adjusted p < {alpha} (paired t-test across "
            "training seeds, each seed's test metric paired by seed; none with fewer than two seeds); changes with "
            "their 95% interval across seeds. The p-value CSV adds the paired t-test over users, which counts users, "
            "not training runs.", ""]
    body, pvals = section(out, groups, alpha, opts)
    pvals = [with_seed_and_user_tests(out, groups, row) for row in pvals]
    if errors:
        body.append("\nRuns that failed: " + "; ".join(f"{e['spec']['dataset']} {e['spec']['label']} seed "
                                                       f"{e['spec']['seed']}: {e['error']}" for e in errors))
    if pvals:
        write_csv(out / f"{experiment}_pvalues.csv", pvals)
    text = "\n".join(head + body) + "\n"
    (out / f"{experiment}.md").write_text(text)
    parts = [p.read_text() for e in order if (p := out / f"{e}.md").is_file()]
    results = out / "results.md"
    results.write_text("# recbole-dns experiments\n\n" + "\n".join(parts))
    print(text)
    return results


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"
