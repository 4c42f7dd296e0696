"""Figures more than one experiment draws, and figures as Markdown (they sit beside ``results.md``).
Matplotlib's setup and the saving are :mod:`recbole_dns.figures`'."""

from __future__ import annotations

from pathlib import Path

from recbole_dns.experiments.report import Group, datasets_of
from recbole_dns.figures import pyplot, save


def markdown(figures: list[Path]) -> list[str]:
    """Figures as Markdown images."""
    return [f"\n![{f.stem}]({f.name})" for f in figures]


def quality_figures(groups: list[Group], out: Path) -> list[Path]:
    """Per dataset: validation NDCG@10 against epochs and against seconds (quality against training time),
    every seed of every row, and the training loss per epoch where the runs logged it."""
    plt = pyplot()
    paths = []
    for dataset in datasets_of(groups):
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
        paths.append(save(fig, out / f"quality_vs_time_{dataset}.png"))
    return paths
