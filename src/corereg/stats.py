"""Paired significance tests: Wilcoxon signed-rank with Holm correction."""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilcoxon_paired(a, b) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of paired samples; NaN pairs are dropped.

    Returns (statistic, p, n) with n the number of pairs the test used: zero differences
    are dropped (scipy's default ``zero_method='wilcox'``) and do not count; if nothing
    remains p is NaN.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(np.count_nonzero(a != b))  # the pairs the test ranks: zero differences are dropped
    if n == 0:
        return float("nan"), float("nan"), n
    res = stats.wilcoxon(a, b, alternative="two-sided")
    return float(res.statistic), float(res.pvalue), n


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; NaN entries stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.where(np.isfinite(p))[0]
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
