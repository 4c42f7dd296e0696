"""Figures shared by the sweeps and the experiments: matplotlib without a display, saving, and the paper's
Figure 2 (a metric against the update interval ``n`` or the pool size ``k``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

#: Figure 2's x axes
AXES = {"dns_n": "update interval n", "dns_k": "pool size k"}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close a figure; its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return Path(path)


def figure2(path: str | Path, axis: str, lines: Mapping[str, Sequence[tuple]], ylabel: str, fixed: str = "") -> Path:
    """One panel of Figure 2: a metric against ``axis`` (``dns_n`` or ``dns_k``), one line per entry of
    ``lines`` (label -> ``(x, y)`` or ``(x, y, error)`` points; error bars when every point has one).
    ``fixed`` (e.g. ``"k = 100"``) is added to the x label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in lines.items():
        points = sorted(points)
        if not points:
            continue
        errors = [p[2] for p in points] if all(len(p) > 2 for p in points) else None
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=errors, marker="o",
                    capsize=3 if errors else 0, label=label)
    ax.set_xlabel(AXES[axis] + (f" ({fixed})" if fixed else ""))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(lines) > 4 else 8, ncol=2 if len(lines) > 4 else 1)
    return save(fig, path)
