"""``grid`` (RQ3, Figure 2): BPR_DNS over the update interval ``n`` with ``k`` fixed and over the pool size
``k`` with ``n`` fixed."""

from __future__ import annotations

from pathlib import Path

from recbole_dns.experiments.figures import markdown
from recbole_dns.experiments.report import Group, cell, protocols_of
from recbole_dns.experiments.runs import Row
from recbole_dns.figures import figure2

NAME = "grid"
HELP = "(RQ3, Figure 2) - BPR_DNS over ``n`` with ``k`` fixed and over ``k`` with ``n`` fixed"
STUDY = True
#: the paper's RQ3 values (Section 4.2)
N_VALUES = (1, 5, 10, 20, 30, 40, 50)
K_VALUES = (10, 50, 100, 150, 200, 250, 300)


def rows(dataset: str, opts: dict) -> list[Row]:
    """The DNS variant of ``--models`` (default BPR_DNS) at every ``n`` (``k`` fixed) and every ``k`` (``n`` fixed)."""
    from recbole_dns import models as registry

    chosen = opts.get("models") or []
    model = registry.dns_variant(chosen[0]) if chosen else "BPR_DNS"
    k_fixed, n_fixed = opts["k_fixed"], opts["n_fixed"]
    points = [(n, k_fixed) for n in opts["n_values"]] + [(n_fixed, k) for k in opts["k_values"]]
    return [(model, f"{model} n={n} k={k}", {"dns_n": n, "dns_k": k}, {"dns_n": n, "dns_k": k}) for n, k in points]


def _axis_rows(groups: list[Group], axis: str, fixed: dict) -> list[Group]:
    """The grid points on one axis: those whose other key has its fixed value."""
    other = "dns_k" if axis == "dns_n" else "dns_n"
    return [g for g in groups if axis in g.variant and g.variant.get(other) == fixed[other]]


def table(groups: list[Group], fixed: dict) -> str:
    """Figure 2's numbers: test NDCG@10 over n (k fixed) and over k (n fixed), mean ± std over seeds."""
    lines = []
    for protocol in protocols_of(groups):
        for axis, other in (("dns_n", "dns_k"), ("dns_k", "dns_n")):
            mine = _axis_rows(groups, axis, fixed)
            if not mine:
                continue
            values = sorted({g.variant[axis] for g in mine})
            datasets = list(dict.fromkeys(g.dataset for g in mine))
            lines += [f"\n**test NDCG@10 ({protocol} ranking) against {axis}, {other} = {fixed[other]}**\n",
                      f"| {axis} | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
            for v in values:
                cells = []
                for d in datasets:
                    g = next((g for g in mine if g.dataset == d and g.variant[axis] == v), None)
                    cells.append(cell(g, protocol, "ndcg@10") if g else "")
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(groups: list[Group], out: Path, fixed: dict) -> list[Path]:
    """Figure 2: test NDCG@10 against n and against k, one line per dataset (error bars: std over seeds)."""
    paths = []
    for protocol in protocols_of(groups):
        for axis, other in (("dns_n", "dns_k"), ("dns_k", "dns_n")):
            mine = _axis_rows(groups, axis, fixed)
            if not mine:
                continue
            lines = {d: [(g.variant[axis], *g.summary(protocol, "ndcg@10")) for g in mine if g.dataset == d]
                     for d in dict.fromkeys(g.dataset for g in mine)}
            paths.append(figure2(out / f"fig2_{protocol}_ndcg_vs_{axis[-1]}.png", axis, lines,
                                 f"test NDCG@10 ({protocol})", fixed=f"{other[-1]} = {fixed[other]}"))
    return paths


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    fixed = {"dns_n": opts["n_fixed"], "dns_k": opts["k_fixed"]}
    return [table(groups, fixed), *markdown(figures(groups, out, fixed))], []
