"""Tables (markdown), CSV files and figures of the experiments, with paired t-tests and Holm's correction."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recbole_dns.experiments.runs import METRIC_KEYS, RunSpec, load_per_user, load_result
from recbole_dns.stats import fmt, holm, mean_std, paired_ttest


@dataclass
class Group:
    """The finished runs (one per seed) of one row of a table: a dataset and a label."""

    dataset: str
    label: str
    model: str
    variant: dict
    results: list[dict]

    def tests(self, protocol: str) -> list[dict]:
        return [t for r in self.results for t in r["tests"] if t["protocol"] == protocol]

    def seed_means(self, protocol: str, metric: str) -> list[float]:
        """One value per seed: the test metric (for ``sampled``, the mean over the test sets)."""
        return [float(np.mean([t[metric] for t in r["tests"] if t["protocol"] == protocol])) for r in self.results
                if any(t["protocol"] == protocol for t in r["tests"])]

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
    """p-value of the paired t-test over users (values averaged over seeds, and over test sets if sampled)."""
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

    def adjusted(self) -> dict[Any, float]:
        keys = [k for k, p in self.raw.items() if np.isfinite(p)]
        adj = holm([self.raw[k] for k in keys])
        return {**{k: np.nan for k in self.raw}, **dict(zip(keys, adj))}


def protocols_of(groups: list[Group]) -> list[str]:
    found = {t["protocol"] for g in groups for r in g.results for t in r["tests"]}
    return [p for p in ("full", "sampled") if p in found]


def _cell(group: Group, protocol: str, metric: str, marker: str = "") -> str:
    mean, std = group.summary(protocol, metric)
    text = fmt(mean, std, marker)
    if protocol == "sampled":
        text += f" (sets ± {group.set_spread(protocol, metric):.4f})"
    return text


# ---- the four experiments' tables ------------------------------------------------------------------------
def samplers_table(out: Path, groups: list[Group], alpha: float) -> tuple[str, list[dict]]:
    """Table 2: NDCG@10 and false-negative rates of the static and dynamic samplers; `*` marks a sampler
    whose NDCG@10 differs significantly from the dissimilar sampler's."""
    lines, pvals = [], []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        ref = next((g for g in rows if g.variant.get("dns_sampler") == "dissimilar"), None)
        for protocol in protocols_of(rows):
            family = Family()
            for g in rows:
                if ref is not None and g is not ref:
                    family.add(g.label, compare(out, ref, g, protocol, "ndcg@10"))
            adj = family.adjusted()
            lines += [f"\n**{dataset}, {protocol} ranking**\n",
                      "| sampler | F-N rate of i- (%) | F-N rate of i'- (%) | NDCG@10 | Recall@10 | p vs dissimilar (Holm) |",
                      "|---|---|---|---|---|---|"]
            for g in rows:
                p = adj.get(g.label, np.nan)
                star = "*" if np.isfinite(p) and p < alpha else ""
                fn_s, fn_d = g.fn_rate("static"), g.fn_rate("dns")
                lines.append(f"| {g.label} | {fn_s * 100:.4f} | {'' if np.isnan(fn_d) else f'{fn_d * 100:.4f}'} | "
                             f"{_cell(g, protocol, 'ndcg@10', star)} | {_cell(g, protocol, 'recall@10')} | "
                             f"{'' if not np.isfinite(p) else f'{p:.2g}'} |")
                if g.label in family.raw:
                    pvals.append({"dataset": dataset, "protocol": protocol, "a": ref.label, "b": g.label,
                                  "metric": "ndcg@10", "p_raw": family.raw[g.label], "p_holm": p})
    return "\n".join(lines), pvals


def models_table(out: Path, groups: list[Group], alpha: float) -> tuple[str, list[dict]]:
    """Table 3: every model's NDCG/Recall/MAP@10, the DNS variants' improvement over their bases; `*` on a
    base (or on PRIS/MixGCF) that differs significantly from its DNS variant (from the best DNS variant),
    `†` on a DNS variant that differs significantly from every other DNS variant of the table."""
    from recbole_dns import models

    lines, pvals = [], []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        by_model = {g.model: g for g in rows}
        dns_rows = [g for g in rows if models.is_dns_model(g.model)]
        for protocol in protocols_of(rows):
            family = Family()
            best_dns = max(dns_rows, key=lambda g: g.summary(protocol, "ndcg@10")[0], default=None)
            for g in rows:
                for metric in METRIC_KEYS:
                    if models.is_dns_model(g.model):
                        base = by_model.get(models.base_of(g.model))
                        if base is not None:
                            family.add(("*", base.label, g.label, metric), compare(out, base, g, protocol, metric))
                        for other in dns_rows:
                            if other is not g and ("†", other.label, g.label, metric) not in family.raw:
                                family.add(("†", g.label, other.label, metric), compare(out, g, other, protocol, metric))
                    elif best_dns is not None and g.model not in models.DNS_VARIANTS:
                        family.add(("*", g.label, best_dns.label, metric), compare(out, g, best_dns, protocol, metric))
            adj = family.adjusted()
            sig = {k: (np.isfinite(p) and p < alpha) for k, p in adj.items()}

            def marker(g: Group, metric: str) -> str:
                if models.is_dns_model(g.model):
                    others = [o for o in dns_rows if o is not g]
                    dagger = bool(others) and all(sig.get(("†", g.label, o.label, metric), sig.get(("†", o.label, g.label, metric), False))
                                                  for o in others)
                    return "†" if dagger else ""
                return "*" if any(sig.get(k) for k in sig if k[0] == "*" and k[1] == g.label and k[3] == metric) else ""

            lines += [f"\n**{dataset}, {protocol} ranking**\n",
                      "| model | NDCG@10 | Recall@10 | MAP@10 | valid NDCG@10 | best epoch | s / epoch |",
                      "|---|---|---|---|---|---|---|"]
            for g in rows:
                cells = [_cell(g, protocol, m, marker(g, m)) for m in METRIC_KEYS]
                valid = np.mean([r["valid"].get("ndcg@10", np.nan) for r in g.results])
                lines.append(f"| {g.label} | " + " | ".join(cells) + f" | {valid:.4f} | {g.mean_of('best_epoch'):.0f} | "
                             f"{g.mean_of('s_per_epoch'):.2f} |")
                if models.is_dns_model(g.model) and models.base_of(g.model) in by_model:
                    base = by_model[models.base_of(g.model)]
                    imp = [(g.summary(protocol, m)[0] / base.summary(protocol, m)[0] - 1) * 100 for m in METRIC_KEYS]
                    ps = [adj.get(("*", base.label, g.label, m), np.nan) for m in METRIC_KEYS]
                    lines.append("| improvement over " + base.label + " | " + " | ".join(
                        f"{i:+.1f}% (p {p:.2g})" for i, p in zip(imp, ps)) + " | | | |")
            for key, p in family.raw.items():
                pvals.append({"dataset": dataset, "protocol": protocol, "a": key[1], "b": key[2], "metric": key[3],
                              "test": key[0], "p_raw": p, "p_holm": adj[key]})
    return "\n".join(lines), pvals


def _axis_rows(groups: list[Group], axis: str, fixed: dict) -> list[Group]:
    """The grid points on one axis: those whose other key has its fixed value."""
    other = "dns_k" if axis == "dns_n" else "dns_n"
    return [g for g in groups if axis in g.variant and g.variant.get(other) == fixed[other]]


def grid_table(out: Path, groups: list[Group], fixed: dict) -> str:
    """Figure 2's numbers: test NDCG@10 over n (k fixed) and over k (n fixed), mean ± std over seeds."""
    lines = []
    for protocol in protocols_of(groups):
        for axis, other in (("dns_n", "dns_k"), ("dns_k", "dns_n")):
            rows = _axis_rows(groups, axis, fixed)
            if not rows:
                continue
            fixed_value = fixed[other]
            values = sorted({g.variant[axis] for g in rows})
            datasets = list(dict.fromkeys(g.dataset for g in rows))
            lines += [f"\n**test NDCG@10 ({protocol} ranking) against {axis}, {other} = {fixed_value}**\n",
                      f"| {axis} | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
            for v in values:
                cells = []
                for d in datasets:
                    g = next((g for g in rows if g.dataset == d and g.variant[axis] == v), None)
                    cells.append(_cell(g, protocol, "ndcg@10") if g else "")
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def entropy_table(groups: list[Group]) -> str:
    """Eq. 6's entropy at the first and last epoch, and the best validation NDCG@10, per model."""
    lines = ["| dataset | model | entropy, first epoch | entropy, last epoch | best valid NDCG@10 (epoch) |",
             "|---|---|---|---|---|"]
    for g in groups:
        curves = [[d["entropy"] for d in r.get("diagnostics", []) if "entropy" in d] for r in g.results]
        curves = [c for c in curves if c]
        if not curves:
            continue
        best = [max(r["curve"], key=lambda c: c["valid_ndcg@10"]) for r in g.results if r["curve"]]
        lines.append(f"| {g.dataset} | {g.label} | {fmt(*mean_std([c[0] for c in curves]), digits=2)} | "
                     f"{fmt(*mean_std([c[-1] for c in curves]), digits=2)} | "
                     f"{fmt(*mean_std([b['valid_ndcg@10'] for b in best]))} "
                     f"({np.mean([b['epoch'] for b in best]):.0f}) |")
    return "\n".join(lines)


def ablation_table(out: Path, groups: list[Group], reference: str | dict[str, str],
                   alpha: float) -> tuple[str, list[dict]]:
    """Every row against the reference row (a label, or one per dataset): validation and test NDCG@10 (mean
    ± std over seeds), test Recall/MAP@10, the change of test NDCG@10 and its Holm-adjusted p-value (`*` at
    p < alpha), and the epochs and seconds each row takes to reach 95% of the reference's best validation NDCG@10."""
    lines, pvals = [], []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        ref_label = reference.get(dataset) if isinstance(reference, dict) else reference
        ref = next((g for g in rows if g.label == ref_label), None)
        target = 0.95 * best_valid(ref) if ref is not None else np.nan
        for protocol in protocols_of(rows):
            family = Family()
            for g in rows:
                if ref is not None and g is not ref:
                    for metric in METRIC_KEYS:
                        family.add((g.label, metric), compare(out, ref, g, protocol, metric))
            adj = family.adjusted()
            lines += [f"\n**{dataset}, {protocol} ranking** (reference: {ref_label})\n",
                      "| row | valid NDCG@10 | test NDCG@10 | test Recall@10 | test MAP@10 | NDCG@10 vs reference (Holm p) "
                      "| best epoch | s / epoch | epochs / s to 95% of the reference's best valid |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for g in rows:
                valid = mean_std([r["valid"].get("ndcg@10", np.nan) for r in g.results])
                marks = {m: ("*" if np.isfinite(adj.get((g.label, m), np.nan)) and adj[(g.label, m)] < alpha else "")
                         for m in METRIC_KEYS}
                change = ""
                if ref is not None and g is not ref:
                    rel = (g.summary(protocol, "ndcg@10")[0] / ref.summary(protocol, "ndcg@10")[0] - 1) * 100
                    change = f"{rel:+.1f}% ({adj.get((g.label, 'ndcg@10'), np.nan):.2g})"
                lines.append(f"| {g.label} | {fmt(*valid)} | " + " | ".join(_cell(g, protocol, m, marks[m]) for m in METRIC_KEYS)
                             + f" | {change} | {g.mean_of('best_epoch'):.0f} | {g.mean_of('s_per_epoch'):.2f} | {reach(g, target)} |")
            for key, p in family.raw.items():
                pvals.append({"dataset": dataset, "protocol": protocol, "a": ref_label, "b": key[0], "metric": key[1],
                              "p_raw": p, "p_holm": adj[key]})
    return "\n".join(lines), pvals


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


def diagnose_table(groups: list[Group]) -> str:
    """Per model: mean over training of the false-negative rates and of the contrastive negatives' share of
    the softmax weight, Spearman rho of item norm against popularity, best validation NDCG@10, and the
    epochs and seconds to reach 95% of the base model's best validation NDCG@10 (for a DNS variant, its base's)."""
    from recbole_dns import models

    lines = ["| dataset | model | F-N rate i- (%) | F-N rate i'- (%) | i'- share of the negatives' weight | "
             "rho(item norm, popularity) | best valid NDCG@10 (epoch) | epochs / seconds to 95% of the base's best |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        by_model = {g.model: g for g in rows}
        for g in rows:
            ref = by_model.get(models.base_of(g.model), g) if models.is_dns_model(g.model) else g
            target = 0.95 * best_valid(ref)
            shares = [np.mean([d["grad_share_dns"] for d in r.get("diagnostics", []) if "grad_share_dns" in d])
                      for r in g.results if any("grad_share_dns" in d for d in r.get("diagnostics", []))]
            reach_text = reach(g, target)
            best = [max(r["curve"], key=lambda c: c["valid_ndcg@10"]) for r in g.results if r["curve"]]
            rho = [r.get("norm_popularity_spearman") for r in g.results if r.get("norm_popularity_spearman") is not None]
            fn_d = g.fn_rate("dns")
            lines.append(f"| {dataset} | {g.label} | {g.fn_rate('static') * 100:.3f} | "
                         f"{'' if np.isnan(fn_d) else f'{fn_d * 100:.3f}'} | "
                         f"{fmt(*mean_std(shares), digits=3) if shares else ''} | {fmt(*mean_std(rho), digits=3) if rho else ''} | "
                         f"{fmt(*mean_std([b['valid_ndcg@10'] for b in best]))} ({np.mean([b['epoch'] for b in best]):.0f}) | "
                         f"{reach_text} |")
    return "\n".join(lines)


# ---- figures ------------------------------------------------------------------------------------------
def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close a figure; its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid_figures(groups: list[Group], out: Path, fixed: dict) -> list[Path]:
    """Figure 2: test NDCG@10 against n and against k, one line per dataset (error bars: std over seeds)."""
    plt = _plt()
    paths = []
    for protocol in protocols_of(groups):
        for axis, name in (("dns_n", f"update interval n (k = {fixed['dns_k']})"), ("dns_k", f"pool size k (n = {fixed['dns_n']})")):
            rows = _axis_rows(groups, axis, fixed)
            if not rows:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for d in dict.fromkeys(g.dataset for g in rows):
                pts = sorted((g.variant[axis], *g.summary(protocol, "ndcg@10")) for g in rows if g.dataset == d)
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=d)
            ax.set_xlabel(name)
            ax.set_ylabel(f"test NDCG@10 ({protocol})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            paths.append(_save(plt, fig, out / f"fig2_{protocol}_ndcg_vs_{axis[-1]}.png"))
    return paths


def entropy_figures(groups: list[Group], out: Path) -> list[Path]:
    """Figure 3: Eq. 6's entropy per epoch (left axis) and validation NDCG@10 (right axis), per dataset."""
    plt = _plt()
    paths = []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax2 = ax.twinx()
        for i, g in enumerate(g for g in groups if g.dataset == dataset):
            curves = [[(d["epoch"], d["entropy"]) for d in r.get("diagnostics", []) if "entropy" in d] for r in g.results]
            n = min((len(c) for c in curves), default=0)
            if n:
                ent = np.mean([[e for _, e in c[:n]] for c in curves], axis=0)
                ax.plot(range(n), ent, color=f"C{i}", label=f"{g.label} entropy")
            valid = [[c["valid_ndcg@10"] for c in r["curve"]] for r in g.results]
            m = min((len(v) for v in valid), default=0)
            if m:
                ax2.plot(range(m), np.mean([v[:m] for v in valid], axis=0), color=f"C{i}", linestyle="--",
                         label=f"{g.label} valid NDCG@10")
        ax.set_xlabel("epoch")
        ax.set_ylabel("entropy (Eq. 6)")
        ax2.set_ylabel("validation NDCG@10")
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=7, loc="lower right")
        ax.set_title(dataset)
        paths.append(_save(plt, fig, out / f"fig3_entropy_{dataset}.png"))
    return paths


def quality_figures(groups: list[Group], out: Path) -> list[Path]:
    """Per dataset: validation NDCG@10 against epochs and against seconds (quality against training time),
    every seed of every row, and the training loss per epoch where the runs logged it."""
    plt = _plt()
    paths = []
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        with_loss = any("train_loss" in d for g in rows for r in g.results for d in r.get("diagnostics", []))
        fig, axes = plt.subplots(1, 3 if with_loss else 2, figsize=(13 if with_loss else 9, 3.6))
        for i, g in enumerate(rows):
            for j, r in enumerate(g.results):
                label = g.label if j == 0 else None
                epochs = [c["epoch"] + 1 for c in r["curve"]]
                axes[0].plot(epochs, [c["valid_ndcg@10"] for c in r["curve"]], color=f"C{i}", alpha=0.8, label=label)
                axes[1].plot([c["time_s"] for c in r["curve"]], [c["valid_ndcg@10"] for c in r["curve"]], color=f"C{i}",
                             alpha=0.8, label=label)
                loss = [(d["epoch"] + 1, d["train_loss"]) for d in r.get("diagnostics", []) if "train_loss" in d]
                if loss:
                    axes[2].plot(*zip(*loss), color=f"C{i}", alpha=0.8, label=label)
        axes[0].set_xlabel("epoch")
        axes[1].set_xlabel("seconds (training and validation)")
        for ax in axes[:2]:
            ax.set_ylabel("validation NDCG@10")
        if with_loss:
            axes[2].set_xlabel("epoch")
            axes[2].set_ylabel("training loss (sum over batches)")
            axes[2].set_yscale("log")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(dataset)
        paths.append(_save(plt, fig, out / f"quality_vs_time_{dataset}.png"))
    return paths


def diagnose_figures(out: Path, groups: list[Group]) -> list[Path]:
    """:func:`quality_figures`, and per dataset item norm against item popularity (first seed)."""
    plt = _plt()
    paths = quality_figures(groups, out)
    for dataset in dict.fromkeys(g.dataset for g in groups):
        rows = [g for g in groups if g.dataset == dataset]
        fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.2), squeeze=False)
        for ax, g in zip(axes[0], rows):
            data = load_per_user(out, g.results[0]["run_id"]).get("items")
            if data is not None:
                ax.scatter(np.log1p(data["popularity"]), data["norm"], s=2, alpha=0.3)
                ax.set_title(f"{g.label} (rho {g.results[0].get('norm_popularity_spearman', np.nan):.2f})", fontsize=9)
            ax.set_xlabel("log(1 + training interactions)")
            ax.set_ylabel("item norm")
        fig.suptitle(dataset)
        paths.append(_save(plt, fig, out / f"item_norm_vs_popularity_{dataset}.png"))
    return paths


# ---- CSV -----------------------------------------------------------------------------------------------
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
        path = out / f"{experiment}_{name}.csv"
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["experiment"])
            writer.writeheader()
            writer.writerows(rows)
