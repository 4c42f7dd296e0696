"""``entropy`` (RQ4, Figure 3): Eq. 6's entropy per epoch for a base model and its DNS variant, with
validation NDCG@10."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbole_dns.experiments.figures import markdown
from recbole_dns.experiments.report import Group, best_epochs, datasets_of
from recbole_dns.experiments.runs import Row, base_config
from recbole_dns.figures import pyplot, save
from recbole_dns.stats import fmt, mean_std

NAME = "entropy"
HELP = "(RQ4, Figure 3) - Eq. 6's entropy per epoch for BPR and BPR_DNS, with validation NDCG@10"
STUDY = True


def rows(dataset: str, opts: dict) -> list[Row]:
    """The base model (``--models``, default BPR) and its DNS variant, entropy logged, early stopping off."""
    from recbole_dns import models as registry

    chosen = opts.get("models") or []
    base = chosen[0] if chosen else "BPR"
    no_stop = {"log_entropy": True, "eval_step": 1, "stopping_step": int(base_config(opts)["epochs"]) + 1}
    return [(base, base, no_stop, None), (registry.dns_variant(base), registry.dns_variant(base), no_stop, None)]


def table(groups: list[Group]) -> str:
    """Eq. 6's entropy at the first and last epoch, and the best validation NDCG@10, per model."""
    lines = ["| dataset | model | entropy, first epoch | entropy, last epoch | best valid NDCG@10 (epoch) |",
             "|---|---|---|---|---|"]
    for g in groups:
        curves = [[d["entropy"] for d in r.get("diagnostics", []) if "entropy" in d] for r in g.results]
        curves = [c for c in curves if c]
        if not curves:
            continue
        lines.append(f"| {g.dataset} | {g.label} | {fmt(*mean_std([c[0] for c in curves]), digits=2)} | "
                     f"{fmt(*mean_std([c[-1] for c in curves]), digits=2)} | {best_epochs(g)} |")
    return "\n".join(lines)


def figures(groups: list[Group], out: Path) -> list[Path]:
    """Figure 3: Eq. 6's entropy per epoch (left axis) and validation NDCG@10 (right axis), per dataset."""
    plt = pyplot()
    paths = []
    for dataset in datasets_of(groups):
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
        paths.append(save(fig, out / f"fig3_entropy_{dataset}.png"))
    return paths


def report(out: Path, groups: list[Group], alpha: float, opts: dict) -> tuple[list[str], list[dict]]:
    notes = ("\nEntropy (Eq. 6, `recbole_dns.embedding_entropy`): the users' rows and one row per training "
             "instance's negative (BPR: its static random negative; the DNS variant: its contrastive negative "
             "only), softmax over each row's coordinates, summed, divided by d; early stopping off.")
    return [table(groups), *markdown(figures(groups, out)), notes], []
