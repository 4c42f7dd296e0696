"""``samplers`` (RQ1, Table 2): BPR's static random sampler against the dynamic random, similar and
dissimilar pools of BPR_DNS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbole_dns.experiments.report import Family, Group, cell, compare, datasets_of, protocols_of
from recbole_dns.experiments.runs import Row

NAME = "samplers"
HELP = ("(RQ1, Table 2) - BPR with its static random sampler against BPR_DNS with the dynamic\n"
        "  random, similar and dissimilar pools: NDCG@10 and the false-negative rates of ``i-`` and ``i'-``")
#: the DNS variants run the study's ``--dns-preset``
STUDY = True
DYNAMIC = ("random", "similar", "dissimilar")


def rows(dataset: str, opts: dict) -> list[Row]:
    """The static sampler of the base model (``--models``, default BPR) and its DNS variant's three pools."""
    from recbole_dns import models as registry

    chosen = opts.get("models") or []
    base = chosen[0] if chosen else "BPR"
    variant = registry.dns_variant(base)
    return [(base, f"static random ({base})", {"log_fn_rate": True}, {"dns_sampler": None})] + [
        (variant, f"dynamic {s}", {"log_fn_rate": True, "dns_sampler": s}, {"dns_sampler": s}) for s in DYNAMIC]


def table(out: Path, groups: list[Group], alpha: float) -> tuple[str, list[dict]]:
    """Table 2: NDCG@10 and false-negative rates of the static and dynamic samplers; `*` marks a sampler
    whose NDCG@10 differs significantly from the dissimilar sampler's."""
    lines, pvals = [], []
    for dataset in datasets_of(groups):
        mine = [g for g in groups if g.dataset == dataset]
        ref = next((g for g in mine if g.variant.get("dns_sampler") == "dissimilar"), None)
        for protocol in protocols_of(mine):
            family = Family()
            for g in mine:
                if ref is not None and g is not ref:
                    family.add(g.label, compare(out, ref, g, protocol, "ndcg@10"))
            adj = family.adjusted()
            lines += [f"\n**{dataset}, {protocol} ranking**\n",
                      "| sampler | F-N rate of i- (%) | F-N rate of i'- (%) | NDCG@10 | Recall@10 | p vs dissimilar (Holm) |",
                      "|---|---|---|---|---|---|"]
            for g in mine:
                p = adj.get(g.label, np.nan)
                star = "*" if np.isfinite(p) and p < alpha else ""
                fn_s, fn_d = g.fn_rate("static"), g.fn_rate("dns")
                lines.append(f"| {g.label} | {fn_s * 100:.4f} | {'' if np.isnan(fn_d) else f'{fn_d * 100:.4f}'} | "
                             f"{cell(g, protocol, 'ndcg@10', star)} | {cell(g, protocol, 'recall@10')} | "
                             f"{'' if not np.isfinite(p) else f'{p:.2g}'} |")
                if g.label in family.raw:
                    pvals.append({"dataset": dataset, "protocol": protocol, "a": ref.label, "b": g.label,
                                  "metric": "ndcg@10", "p_raw": family.raw[g.label], "p_holm": p})
    return "\n".join(lines), pvals


def expected_fn_rates(groups: list[Group]) -> list[str]:
    """The static sampler's false-negative rate expected from the split alone, next to the measured one."""
    lines = []
    for g in groups:
        exp = [r.get("expected_fn_rate_static") for r in g.results if r.get("expected_fn_rate_static") is not None]
        if exp and g.variant.get("dns_sampler") is None:
            lines.append(f"\nExpected F-N rate of the static sampler on {g.dataset}, from the split alone: "
                         f"{sum(exp) / len(exp) * 100:.4f}% (measured {g.fn_rate('static') * 100:.4f}%).")
    return lines


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    text, pvals = table(out, groups, alpha)
    notes = ("\n`*`: NDCG@10 differs significantly from the dynamic dissimilar sampler's. F-N rate: share of "
             "training instances whose negative is one of the user's test items, averaged over training.")
    return [text, notes, *expected_fn_rates(groups)], pvals
