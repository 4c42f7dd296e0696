"""Statistics for comparing models: paired t-tests across training seeds (with a 95% interval of the relative
change) and over users, Holm-Bonferroni, the paper's markers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

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


@dataclass(frozen=True)
class SeedTest:
    """``a`` against ``b`` across training seeds: the seeds both have (``n``), the two-sided p-value of the
    paired t-test over them, and the relative change ``mean(a - b) / mean(b)`` with its confidence interval
    (``nan`` with fewer than two seeds, and when every seed gives the same nonzero difference)."""

    n: int
    p: float
    change: float
    low: float
    high: float


def seed_test(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> SeedTest:
    """Paired t-test of ``a`` vs ``b`` across training seeds (``{seed: metric}``, paired by seed), and the
    relative change of ``a`` over ``b`` with a t-interval of ``confidence`` (the interval of the mean paired
    difference, divided by ``b``'s mean): the interval excludes 0 exactly when ``p < 1 - confidence``."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    x = np.array([a[s] for s in seeds], dtype=np.float64)
    y = np.array([b[s] for s in seeds], dtype=np.float64)
    n = len(seeds)
    if n == 0:
        return SeedTest(0, np.nan, np.nan, np.nan, np.nan)
    base = y.mean()
    d = x - y
    change = d.mean() / base
    if n < 2:
        return SeedTest(n, np.nan, change, np.nan, np.nan)
    sd = d.std(ddof=1)
    if sd == 0:  # every seed the same difference: no t-test (its t is 0/0 or infinite), no interval
        return SeedTest(n, 1.0, 0.0, 0.0, 0.0) if d.mean() == 0 else SeedTest(n, np.nan, change, np.nan, np.nan)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)
    return SeedTest(n, float(stats.ttest_rel(x, y).pvalue), float(change), float((d.mean() - half) / base),
                    float((d.mean() + half) / base))


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
