"""``ablation``: the rows of a YAML file (``--variants``), each against a reference row; a row with ``choose``
is first trained at every value and compared at the value with the best validation NDCG@10."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recbole_dns.experiments import choosing
from recbole_dns.experiments.choosing import expand_choices
from recbole_dns.experiments.figures import markdown, quality_figures
from recbole_dns.experiments.report import (Family, Group, best_epoch_text, best_valid, cell, change, change_text, compare,
                                            datasets_of, protocols_of, reach)
from recbole_dns.experiments.runs import METRIC_KEYS, Row
from recbole_dns.stats import fmt, mean_std, seed_test

NAME = "ablation"
HELP = ("- the rows of a YAML file (``--variants``), each against a reference row; a row with\n"
        "  ``choose`` (e.g. ``{learning_rate: [0.001, 0.005, 0.01]}``) is first trained at every value (``choose_seeds``\n"
        "  seeds, default 1) and then compared at the value with the best validation NDCG@10 (per dataset), so a\n"
        "  base and its DNS variants are tuned with the same number of trials on validation data only")
#: an ablation's rows say what they run: no ``--dns-preset``
STUDY = False
#: the keys of an ablation's YAML file, and of each of its rows
KEYS = ("reference", "rows", "choose_seeds", "extend_edges", "decide")
ROW_KEYS = ("label", "model", "config", "datasets", "choose", "priority")


def rows(dataset: str, opts: dict) -> list[Row]:
    """The rows of ``--variants`` (where ``choose`` ran: the chosen candidate of each row), per dataset config."""
    from recbole_dns import models as registry

    chosen = opts.get("chosen", {}).get(dataset)
    out = []
    for row in chosen.values() if chosen is not None else opts["variants"]["rows"]:
        registry.get_model(row["model"])
        extra = {**(row.get("config") or {}), **((row.get("datasets") or {}).get(dataset) or {})}
        out.append((row["model"], row["label"], extra, {"row": row["label"]}))
    return out


def check_variants(variants: Any) -> None:
    """An ablation's YAML: ``reference`` (a row label) and ``rows``, each with ``label`` and ``model``."""
    from recbole_dns.errors import ConfigError

    if not isinstance(variants, dict) or not isinstance(variants.get("rows"), list) or not variants["rows"]:
        raise ConfigError("ablation variants must be a mapping with a non-empty list `rows` (label, model, config)")
    unknown = sorted(set(variants) - set(KEYS))
    if unknown:
        raise ConfigError(f"ablation variants: unknown key(s) {unknown}; allowed: {', '.join(KEYS)}")
    labels = []
    for row in variants["rows"]:
        if not isinstance(row, dict) or not {"label", "model"} <= set(row):
            raise ConfigError(f"every ablation row needs `label` and `model`; got {row!r}")
        unknown = sorted(set(row) - set(ROW_KEYS))
        if unknown:
            raise ConfigError(f"ablation row {row['label']!r}: unknown key(s) {unknown}; allowed: {', '.join(ROW_KEYS)}")
        priority = row.get("priority", 0)
        if not isinstance(priority, (int, float)) or isinstance(priority, bool):
            raise ConfigError(f"ablation row {row['label']!r}: `priority` must be a number (higher runs first); "
                              f"got {priority!r}")
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
    decide = variants.get("decide")
    if decide is not None:
        ok = (isinstance(decide, dict) and isinstance(decide.get("rows"), list) and isinstance(decide.get("against"), list)
              and set(decide["rows"]) | set(decide["against"]) <= set(labels))
        if not ok:
            raise ConfigError(f"ablation `decide` must be {{rows: [labels], against: [labels]}} with labels among {labels}; "
                              f"got {decide!r}")
    extend = variants.get("extend_edges", 1)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise ConfigError(f"ablation `extend_edges` must be an integer >= 0; got {extend!r}")
    if variants.get("reference") not in labels:
        raise ConfigError(f"ablation `reference` must be one of the row labels {labels}; got {variants.get('reference')!r}")


def setup(datasets: list[str], out: Path, opts: dict, run: dict) -> None:
    """Check ``--variants`` and run its rows (:func:`choose`: where a row has ``choose``, on validation first;
    rows with a higher ``priority`` first)."""
    check_variants(opts["variants"])
    chosen, choices = choose(datasets, out, opts, run)
    if any(row.get("choose") for row in opts["variants"]["rows"]):
        opts["chosen"], opts["choices"] = chosen, choices


def choose(datasets: list[str], out: Path, opts: dict, run: dict) -> tuple[dict, dict]:
    """:func:`choosing.choose` for this experiment's rows."""
    return choosing.choose(NAME, rows, datasets, out, opts, run)


def choices_table(opts: dict) -> str:
    """The candidates of the rows with ``choose``, their validation NDCG@10 and the chosen one (bold)."""
    seeds = int(opts["variants"].get("choose_seeds", 1))
    lines = [f"Chosen on validation (best validation NDCG@10, mean of {seeds} seed(s); the chosen candidate in bold):", "",
             "| dataset | row | trials | validation NDCG@10 of each candidate |", "|---|---|---|---|"]
    for dataset, by_label in opts["choices"].items():
        for label, scored in by_label.items():
            pick = opts["chosen"][dataset].get(label, {}).get("label")
            cells = "; ".join((f"**{c}: {v:.4f}**" if c == pick else f"{c}: {v:.4f}") for c, v in scored)
            lines.append(f"| {dataset} | {label} | {len(scored)} | {cells} |")
    edges = [f"{label} ({dataset})" for dataset, label, _ in opts.get("edges", [])]
    if edges:
        lines += ["", "**Best point still on the edge of its grid** (its optimum may lie beyond; extend the grid or "
                  "raise `extend_edges`): " + ", ".join(edges) + "."]
    return "\n".join(lines) + "\n"


def table(out: Path, groups: list[Group], reference: str | dict[str, str], alpha: float) -> tuple[str, list[dict]]:
    """Every row against the reference row (a label, or one per dataset): validation and test NDCG@10 (mean
    ± std over seeds), test Recall/MAP@10, the change of test NDCG@10 and its Holm-adjusted p-value (`*` at
    p < alpha), and the epochs and seconds each row takes to reach 95% of the reference's best validation NDCG@10."""
    lines, pvals = [], []
    for dataset in datasets_of(groups):
        mine = [g for g in groups if g.dataset == dataset]
        ref_label = reference.get(dataset) if isinstance(reference, dict) else reference
        ref = next((g for g in mine if g.label == ref_label), None)
        target = 0.95 * best_valid(ref) if ref is not None else np.nan
        for protocol in protocols_of(mine):
            family = Family()
            for g in mine:
                if ref is not None and g is not ref:
                    for metric in METRIC_KEYS:
                        family.add((g.label, metric), compare(out, ref, g, protocol, metric))
            adj = family.adjusted()
            lines += [f"\n**{dataset}, {protocol} ranking** (reference: {ref_label})\n",
                      "| row | valid NDCG@10 | test NDCG@10 | test Recall@10 | test MAP@10 | valid NDCG@10 vs reference "
                      "[95%] | test NDCG@10 vs reference [95%] (Holm p) | best epoch | s / epoch | epochs / s to 95% "
                      "of the reference's best valid |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for g in mine:
                valid = mean_std([r["valid"].get("ndcg@10", np.nan) for r in g.results])
                marks = {m: ("*" if np.isfinite(adj.get((g.label, m), np.nan)) and adj[(g.label, m)] < alpha else "")
                         for m in METRIC_KEYS}
                delta = valid_delta = ""
                if ref is not None and g is not ref:
                    test = change(ref, g, protocol, "ndcg@10")
                    p = adj.get((g.label, 'ndcg@10'), np.nan)
                    delta = f"{change_text(test)} ({f'{p:.2g}' if np.isfinite(p) else 'n/a'})"  # n/a: < 2 seeds, no spread
                    valid_delta = change_text(seed_test(g.valid_by_seed("ndcg@10"), ref.valid_by_seed("ndcg@10")))
                lines.append(f"| {g.label} | {fmt(*valid)} | " + " | ".join(cell(g, protocol, m, marks[m]) for m in METRIC_KEYS)
                             + f" | {valid_delta} | {delta} | {best_epoch_text(g)} | {g.mean_of('s_per_epoch'):.2f} | {reach(g, target)} |")
            for key, p in family.raw.items():
                pvals.append({"dataset": dataset, "protocol": protocol, "a": ref_label, "b": key[0], "metric": key[1],
                              "p_raw": p, "p_holm": adj[key]})
    return "\n".join(lines), pvals


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    body = []
    reference = opts["variants"]["reference"]
    if opts.get("chosen"):
        reference = {d: chosen[reference]["label"] for d, chosen in opts["chosen"].items() if reference in chosen}
        body.append(choices_table(opts))
    text, pvals = table(out, groups, reference, alpha)
    body.append(text)
    body.append(f"\n`*`: differs significantly from the reference row `{opts['variants']['reference']}` "
                "(paired t-test across training seeds, Holm over the rows x metrics of the table); changes relative to "
                "the reference, mean over seeds with the 95% interval of the paired per-seed differences. \"Rising at the cap\": "
                "seeds whose validation score was still at its best at the last evaluation (a longer budget may change the row).")
    body.append("\nRows: " + "; ".join(f"`{r['label']}`: {r['model']} {json.dumps(r.get('config') or {})}"
                                        + (f" per dataset {json.dumps(r['datasets'])}" if r.get("datasets") else "")
                                        + (f", choose {json.dumps(r['choose'])}" if r.get("choose") else "")
                                        for r in opts["variants"]["rows"]))
    if opts["variants"].get("decide"):
        body.append(decision(groups, opts, alpha))
    body += markdown(quality_figures(groups, out))
    return body, pvals


def decision(groups: list[Group], opts: dict, alpha: float) -> str:
    """The shipping rule of ``decide``: each of its ``rows`` against every row of ``against``, per dataset (test
    NDCG@10, full ranking, paired t-test across seeds, Holm over the row's comparisons on that dataset); a row
    wins a dataset when it is above every one of them at Holm p < ``alpha``."""
    decide = opts["variants"]["decide"]
    datasets = datasets_of(groups)
    lines = ["\n**Decision** (`decide`): a row wins a dataset when its test NDCG@10 (full ranking) is above every row "
             f"it is set against, each at Holm-adjusted p < {alpha} (paired t-test across training seeds).\n",
             "| row | dataset | " + " | ".join(f"vs {a}" for a in decide["against"]) + " | wins |",
             "|---|---|" + "---|" * (len(decide["against"]) + 1)]
    for label in decide["rows"]:
        won = []
        for dataset in datasets:
            by_label = {g.label: g for g in groups if g.dataset == dataset}
            chosen = (opts.get("chosen") or {}).get(dataset, {})

            def group(row_label: str) -> Group | None:
                return by_label.get((chosen.get(row_label) or {}).get("label", row_label))

            me = group(label)
            tests = [change(group(a), me, "full", "ndcg@10") if me is not None and group(a) is not None and a != label
                     else None for a in decide["against"]]
            ps = [t.p for t in tests if t is not None]
            adj = iter(Family.holm_of(ps))
            cells, wins = [], bool(ps)
            for t in tests:
                if t is None:
                    cells.append("")
                    continue
                p = next(adj)
                wins &= bool(np.isfinite(p) and p < alpha and t.change > 0)
                cells.append(f"{change_text(t)} ({p:.2g})")
            won += [dataset] if wins else []
            lines.append(f"| {label} | {dataset} | " + " | ".join(cells) + f" | {'yes' if wins else 'no'} |")
        lines.append(f"| {label} | all | {len(won)} of {len(datasets)} datasets"
                     + (f" ({', '.join(won)})" if won else "") + " |" + " |" * len(decide["against"]))
    return "\n".join(lines)
