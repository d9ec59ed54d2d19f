"""Agreement statistics against their definitions: CCC, Spearman with ties, mean pairwise CCC."""
import itertools

import numpy as np

from jaxprune import stats


def test_ccc_definition():
    a, b = np.random.default_rng(0).normal(size=(2, 500))
    b = 0.6 * a + b + 0.3
    np.testing.assert_allclose(stats.ccc(a, a), 1.0, rtol=1e-6)
    mean_a, mean_b, var_a, var_b = a.mean(), b.mean(), a.var(), b.var()
    cov = np.mean((a - mean_a) * (b - mean_b))
    np.testing.assert_allclose(stats.ccc(a, b), 2 * cov / (var_a + var_b + (mean_a - mean_b) ** 2), rtol=1e-5)
    za, zb = (a - mean_a) / a.std(), (b - mean_b) / b.std()  # equal means and variances: ccc = Pearson
    np.testing.assert_allclose(stats.ccc(za, zb), np.corrcoef(a, b)[0, 1], rtol=1e-5)
    assert float(stats.ccc(a, b)) < np.corrcoef(a, b)[0, 1]  # shift and scale are penalized


def test_spearman_matches_brute_force_ranks_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=300).astype(np.float32)
    b = (a + rng.integers(0, 4, size=300)).astype(np.float32)

    def brute_ranks(v):
        return np.array([1 + np.sum(v < x) + (np.sum(v == x) - 1) / 2 for x in v], np.float64)

    np.testing.assert_array_equal(stats.average_ranks(a), brute_ranks(a))
    expected = np.corrcoef(brute_ranks(a), brute_ranks(b))[0, 1]
    np.testing.assert_allclose(stats.spearman(a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(stats.spearman(a, np.exp(a)), 1.0, rtol=1e-6)  # monotone map


def test_mean_pairwise_ccc_is_the_mean_over_pairs():
    rows = np.random.default_rng(2).normal(size=(4, 50))
    expected = np.mean([float(stats.ccc(rows[i], rows[j])) for i, j in itertools.combinations(range(4), 2)])
    np.testing.assert_allclose(stats.mean_pairwise_ccc(rows), expected, rtol=1e-6)
    assert np.isnan(stats.mean_pairwise_ccc(rows[:1]))
