"""The clustered bootstrap: known difference and cluster structure, coverage on repeated draws."""

import itertools

import numpy as np

from corereg.stats_cluster import bootstrap_diff_ci, n_clusters, pair_weights

SCANS = [f"{i:04d}" for i in range(10)]
PAIRS = list(itertools.combinations(SCANS, 2))  # every pair of 10 scans, as AbdomenCT's test set
FIXED = [a for a, _ in PAIRS]
MOVING = [b for _, b in PAIRS]


def draw(rng, delta=1.0):
    """Per-pair differences sharing a random effect per scan (the structure of inter-patient pairs)."""
    u = rng.normal(0.0, 1.0, len(SCANS))
    return np.array([delta + u[int(a)] + u[int(b)] + rng.normal(0.0, 0.5) for a, b in PAIRS])


def test_weights_resample_scans_or_pairs():
    rng = np.random.default_rng(0)
    w = pair_weights(FIXED, MOVING, rng, 50)
    assert w.shape == (50, 45) and (w >= 0).all()
    # a pair's weight is the product of its two scans' draw counts: some are 0, some above 1
    assert (w == 0).any() and (w > 1).any()
    assert n_clusters(FIXED, MOVING) == 10
    f, m = ["a1", "b1", "c1"], ["a2", "b2", "c2"]  # longitudinal: one pair per patient
    w = pair_weights(f, m, rng, 200)
    assert (w.sum(1) == 3).all() and n_clusters(f, m) == 3


def test_clustered_interval_covers_the_true_difference_and_naive_pairs_do_not():
    rng = np.random.default_rng(1)
    reps, cover, naive = 200, 0, 0
    for r in range(reps):
        d = draw(rng)
        _, lo, hi = bootstrap_diff_ci(d, FIXED, MOVING, n_boot=800, seed=r)
        cover += lo <= 1.0 <= hi
        means = d[rng.integers(0, len(d), size=(800, len(d)))].mean(1)  # pairs as if independent
        nlo, nhi = np.quantile(means, [0.025, 0.975])
        naive += nlo <= 1.0 <= nhi
    assert 0.88 <= cover / reps <= 0.99, cover / reps
    assert naive / reps < 0.7, naive / reps  # the pair bootstrap is far too narrow here


def test_interval_of_a_constant_difference_is_that_difference():
    mean, lo, hi = bootstrap_diff_ci(np.full(45, 2.5), FIXED, MOVING, n_boot=200)
    assert mean == lo == hi == 2.5
