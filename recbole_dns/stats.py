"""Statistics for comparing models: paired t-tests over users, Holm-Bonferroni, the paper's markers."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of per-user values ``a`` vs ``b`` (scipy's ``ttest_rel``): ``(t, p)``.

    Identical vectors give ``(0.0, 1.0)`` (scipy returns NaN there).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length; got {a.shape} and {b.shape}")
    if np.allclose(a, b, rtol=0, atol=0):
        return 0.0, 1.0
    res = stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values for one family of comparisons (statsmodels' ``multipletests``)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(list(pvalues), dtype=np.float64)
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt(mean: float, std: float | None = None, marker: str = "", digits: int = 4) -> str:
    """``0.1234 ± 0.0012*`` (the spread only when there is one)."""
    text = f"{mean:.{digits}f}"
    if std is not None and std > 0:
        text += f" ± {std:.{digits}f}"
    return text + marker
