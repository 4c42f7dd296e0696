"""``models`` (RQ2, Table 3): PRIS, MixGCF and each base model with its ``_DNS`` variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbole_dns.experiments.report import Family, Group, cell, compare, datasets_of, protocols_of
from recbole_dns.experiments.runs import METRIC_KEYS, Row

NAME = "models"
HELP = "(RQ2, Table 3) - PRIS, MixGCF and each base model with its ``_DNS`` variant"
STUDY = True
#: the paper's Table 3 rows
MODELS = ("PRIS", "MixGCF", "BPR", "BPR_DNS", "LightGCN", "LightGCN_DNS", "SGL", "SGL_DNS", "SimGCL", "SimGCL_DNS")


def rows(dataset: str, opts: dict) -> list[Row]:
    """One row per model (``--models``, default :data:`MODELS`)."""
    from recbole_dns import models as registry

    out = []
    for model in opts.get("models") or MODELS:
        registry.get_model(model)
        out.append((model, model, None, None))
    return out


def table(out: Path, groups: list[Group], alpha: float) -> tuple[str, list[dict]]:
    """Table 3: every model's NDCG/Recall/MAP@10, the DNS variants' improvement over their bases; `*` on a
    base (or on PRIS/MixGCF) that differs significantly from its DNS variant (from the best DNS variant),
    `†` on a DNS variant that differs significantly from every other DNS variant of the table."""
    from recbole_dns import models as registry

    lines, pvals = [], []
    for dataset in datasets_of(groups):
        mine = [g for g in groups if g.dataset == dataset]
        by_model = {g.model: g for g in mine}
        dns_rows = [g for g in mine if registry.is_dns_model(g.model)]
        for protocol in protocols_of(mine):
            family = Family()
            best_dns = max(dns_rows, key=lambda g: g.summary(protocol, "ndcg@10")[0], default=None)
            for g in mine:
                for metric in METRIC_KEYS:
                    if registry.is_dns_model(g.model):
                        base = by_model.get(registry.base_of(g.model))
                        if base is not None:
                            family.add(("*", base.label, g.label, metric), compare(out, base, g, protocol, metric))
                        for other in dns_rows:
                            if other is not g and ("†", other.label, g.label, metric) not in family.raw:
                                family.add(("†", g.label, other.label, metric), compare(out, g, other, protocol, metric))
                    elif best_dns is not None and g.model not in registry.DNS_VARIANTS:
                        family.add(("*", g.label, best_dns.label, metric), compare(out, g, best_dns, protocol, metric))
            adj = family.adjusted()
            sig = {k: (np.isfinite(p) and p < alpha) for k, p in adj.items()}

            def marker(g: Group, metric: str) -> str:
                if registry.is_dns_model(g.model):
                    others = [o for o in dns_rows if o is not g]
                    dagger = bool(others) and all(sig.get(("†", g.label, o.label, metric), sig.get(("†", o.label, g.label, metric), False))
                                                  for o in others)
                    return "†" if dagger else ""
                return "*" if any(sig.get(k) for k in sig if k[0] == "*" and k[1] == g.label and k[3] == metric) else ""

            lines += [f"\n**{dataset}, {protocol} ranking**\n",
                      "| model | NDCG@10 | Recall@10 | MAP@10 | valid NDCG@10 | best epoch | s / epoch |",
                      "|---|---|---|---|---|---|---|"]
            for g in mine:
                cells = [cell(g, protocol, m, marker(g, m)) for m in METRIC_KEYS]
                valid = np.mean([r["valid"].get("ndcg@10", np.nan) for r in g.results])
                lines.append(f"| {g.label} | " + " | ".join(cells) + f" | {valid:.4f} | {g.mean_of('best_epoch'):.0f} | "
                             f"{g.mean_of('s_per_epoch'):.2f} |")
                if registry.is_dns_model(g.model) and registry.base_of(g.model) in by_model:
                    base = by_model[registry.base_of(g.model)]
                    imp = [(g.summary(protocol, m)[0] / base.summary(protocol, m)[0] - 1) * 100 for m in METRIC_KEYS]
                    ps = [adj.get(("*", base.label, g.label, m), np.nan) for m in METRIC_KEYS]
                    lines.append("| improvement over " + base.label + " | " + " | ".join(
                        f"{i:+.1f}% (p {p:.2g})" for i, p in zip(imp, ps)) + " | | | |")
            for key, p in family.raw.items():
                pvals.append({"dataset": dataset, "protocol": protocol, "a": key[1], "b": key[2], "metric": key[3],
                              "test": key[0], "p_raw": p, "p_holm": adj[key]})
    return "\n".join(lines), pvals


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    text, pvals = table(out, groups, alpha)
    notes = ("\n`*` on a base model: its DNS variant differs significantly from it (on PRIS and MixGCF: the "
             "best DNS variant does); `†` on a DNS variant: it differs significantly from every other DNS "
             "variant of the table. Each table is one family for Holm's correction.")
    return [text, notes], pvals
