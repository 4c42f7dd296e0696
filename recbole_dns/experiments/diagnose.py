"""``diagnose``: a base model and its DNS variant with every diagnostic on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbole_dns.experiments.figures import markdown, quality_figures
from recbole_dns.experiments.report import Group, best_epochs, best_valid, datasets_of, reach
from recbole_dns.experiments.runs import Row, load_per_user
from recbole_dns.figures import pyplot, save
from recbole_dns.stats import fmt, mean_std

NAME = "diagnose"
HELP = ("- a base model and its DNS variant with every diagnostic on: false-negative rates, the\n"
        "  contrastive negatives' share of the loss gradient, training loss and validation NDCG@10 per epoch and\n"
        "  per second, item norm against popularity")
STUDY = True


def rows(dataset: str, opts: dict) -> list[Row]:
    """Each base model of ``--models`` (default BPR) and its DNS variant, false-negative rates and gradient
    shares logged."""
    from recbole_dns import models as registry

    watch = {"log_fn_rate": True, "log_grad_share": True}
    out: list[Row] = []
    for base in opts.get("models") or ["BPR"]:
        out += [(base, base, watch, None), (registry.dns_variant(base), registry.dns_variant(base), watch, None)]
    return out


def table(groups: list[Group]) -> str:
    """Per model: mean over training of the false-negative rates and of the contrastive negatives' share of
    the softmax weight, Spearman rho of item norm against popularity, best validation NDCG@10, and the
    epochs and seconds to reach 95% of the base model's best validation NDCG@10 (for a DNS variant, its base's)."""
    from recbole_dns import models as registry

    lines = ["| dataset | model | F-N rate i- (%) | F-N rate i'- (%) | i'- share of the negatives' weight | "
             "rho(item norm, popularity) | best valid NDCG@10 (epoch) | epochs / seconds to 95% of the base's best |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in datasets_of(groups):
        mine = [g for g in groups if g.dataset == dataset]
        by_model = {g.model: g for g in mine}
        for g in mine:
            ref = by_model.get(registry.base_of(g.model), g) if registry.is_dns_model(g.model) else g
            shares = [np.mean([d["grad_share_dns"] for d in r.get("diagnostics", []) if "grad_share_dns" in d])
                      for r in g.results if any("grad_share_dns" in d for d in r.get("diagnostics", []))]
            rho = [r.get("norm_popularity_spearman") for r in g.results if r.get("norm_popularity_spearman") is not None]
            fn_d = g.fn_rate("dns")
            lines.append(f"| {dataset} | {g.label} | {g.fn_rate('static') * 100:.3f} | "
                         f"{'' if np.isnan(fn_d) else f'{fn_d * 100:.3f}'} | "
                         f"{fmt(*mean_std(shares), digits=3) if shares else ''} | {fmt(*mean_std(rho), digits=3) if rho else ''} | "
                         f"{best_epochs(g)} | {reach(g, 0.95 * best_valid(ref))} |")
    return "\n".join(lines)


def figures(out: Path, groups: list[Group]) -> list[Path]:
    """:func:`~recbole_dns.experiments.figures.quality_figures`, and per dataset item norm against item
    popularity (first seed)."""
    plt = pyplot()
    paths = quality_figures(groups, out)
    for dataset in datasets_of(groups):
        mine = [g for g in groups if g.dataset == dataset]
        fig, axes = plt.subplots(1, len(mine), figsize=(3.6 * len(mine), 3.2), squeeze=False)
        for ax, g in zip(axes[0], mine):
            data = load_per_user(out, g.results[0]["run_id"]).get("items")
            if data is not None:
                ax.scatter(np.log1p(data["popularity"]), data["norm"], s=2, alpha=0.3)
                ax.set_title(f"{g.label} (rho {g.results[0].get('norm_popularity_spearman', np.nan):.2f})", fontsize=9)
            ax.set_xlabel("log(1 + training interactions)")
            ax.set_ylabel("item norm")
        fig.suptitle(dataset)
        paths.append(save(fig, out / f"item_norm_vs_popularity_{dataset}.png"))
    return paths


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    notes = ("\nF-N rate: share of training instances whose negative is a test item of the user. i'- share: "
             "per instance, the softmax weight of the contrastive negative(s) over the weight of all the "
             "negatives (the gradient the loss sends through each negative is proportional to its weight), "
             "averaged over training. rho: Spearman correlation of item norm (the scoring tables) and training "
             "popularity at the best epoch.")
    return [table(groups), *markdown(figures(out, groups)), notes], []
