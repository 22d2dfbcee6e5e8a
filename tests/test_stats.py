"""Wilcoxon and Holm against hand-computed cases."""

import numpy as np
import pytest

from corereg.stats import holm, wilcoxon_paired


def test_wilcoxon_all_positive_differences():
    # n = 5, all differences positive: W- = 0; exact two-sided p = 2 / 2^5
    a = np.array([1.0, 2, 3, 4, 5]) + 10
    b = np.full(5, 10.0)
    stat, p, n = wilcoxon_paired(a, b)
    assert (stat, n) == (0.0, 5)
    assert p == pytest.approx(2 / 32)


def test_wilcoxon_one_negative_difference():
    # differences 1, -2, 3, 4, 5: W- = 2; subsets with rank sum <= 2: {}, {1}, {2} -> p = 2 * 3/32
    a = np.array([1.0, -2, 3, 4, 5])
    stat, p, _n = wilcoxon_paired(a, np.zeros(5))
    assert stat == 2.0
    assert p == pytest.approx(6 / 32)


def test_wilcoxon_drops_nan_pairs_and_handles_identical_samples():
    a = np.array([1.0, 2, np.nan, 4])
    _, _, n = wilcoxon_paired(a, np.zeros(4))
    assert n == 3
    _, p, _ = wilcoxon_paired(np.ones(4), np.ones(4))
    assert np.isnan(p)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, 1*0.04 -> monotone 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = holm([0.2, np.nan, 0.9])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.4, 0.9])
    assert holm([0.6, 0.7]).max() <= 1.0


def test_wilcoxon_n_excludes_zero_differences():
    # differences 0, 0, 1, 2, 3, 4: the two ties are dropped, the test ranks n = 4 pairs;
    # all positive -> exact two-sided p = 2 / 2^4
    a = np.array([5.0, 6, 8, 9, 10, 11])
    b = np.array([5.0, 6, 7, 7, 7, 7])
    stat, p, n = wilcoxon_paired(a, b)
    assert n == 4 and stat == 0.0
    assert p == pytest.approx(2 / 16)
