"""Paired bootstrap confidence intervals that respect how test pairs were drawn.

The AbdomenCT test set is every pair of 10 scans: each scan appears in 9 of the 45
pairs, so the pairs are not independent.  Resampling pairs treats them as if they
were and gives intervals that are too narrow.  Here the *scans* are resampled with
replacement and a pair counts as often as both of its scans were drawn (the product
of their multiplicities, a two-way cluster bootstrap).  Where every scan belongs to
exactly one pair (RAD-ChestCT: one longitudinal pair per patient) this is the same
as resampling pairs (patients).
"""

from __future__ import annotations

import numpy as np


def pair_weights(fixed, moving, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, n_pairs) bootstrap weights of the pairs, resampling scans or pairs."""
    fixed, moving = np.asarray(fixed, dtype=str), np.asarray(moving, dtype=str)
    n = len(fixed)
    scans, idx = np.unique(np.concatenate([fixed, moving]), return_inverse=True)
    fi, mi = idx[:n], idx[n:]
    if len(scans) == 2 * n:  # every scan in one pair: the pairs are the clusters
        draws = rng.integers(0, n, size=(n_boot, n))
        return np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
    draws = rng.integers(0, len(scans), size=(n_boot, len(scans)))
    counts = np.stack([np.bincount(d, minlength=len(scans)) for d in draws]).astype(float)
    return counts[:, fi] * counts[:, mi]


def n_clusters(fixed, moving) -> int:
    """Independent units: the scans, or the pairs where every scan is in one pair."""
    fixed, moving = np.asarray(fixed, dtype=str), np.asarray(moving, dtype=str)
    scans = len(np.unique(np.concatenate([fixed, moving])))
    return len(fixed) if scans == 2 * len(fixed) else scans


def bootstrap_diff_ci(diff, fixed, moving, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Mean of the per-pair differences and its confidence interval: (mean, low, high).

    The standard error comes from the clustered bootstrap; the interval is
    mean ± t(K − 1) · SE with K independent units (scans or patients).  With the
    10 scans of AbdomenCT the plain percentile interval covers only about 87 % instead
    of 95 % (too few clusters); the t-quantile restores about 93 % (tested)."""
    from scipy import stats

    diff = np.asarray(diff, dtype=float)
    if diff.size < 2:
        return float(diff.mean()) if diff.size else float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    w = pair_weights(fixed, moving, rng, n_boot)
    while (w.sum(1) == 0).any():  # no pair drawn: draw those again
        bad = w.sum(1) == 0
        w[bad] = pair_weights(fixed, moving, rng, int(bad.sum()))
    se = float(((w * diff).sum(1) / w.sum(1)).std(ddof=1))
    k = n_clusters(fixed, moving)
    half = float(stats.t.ppf((1 + level) / 2, max(k - 1, 1))) * se
    mean = float(diff.mean())
    return mean, mean - half, mean + half
