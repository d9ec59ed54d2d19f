"""Agreement statistics against their definitions: CCC, Spearman with ties, mean pairwise CCC; paired
differences against scipy and hand formulas (t), a direct numpy and scipy's bootstrap, and their edge cases."""
import itertools

import numpy as np
import pytest
from conftest import assert_close_across_programs
from scipy import stats as scipy_stats

from jaxprune import stats
from jaxprune.errors import ConfigError


def test_ccc_definition():
    a, b = np.random.default_rng(0).normal(size=(2, 500))
    b = 0.6 * a + b + 0.3
    np.testing.assert_allclose(stats.ccc(a, a), 1.0, rtol=1e-6)
    mean_a, mean_b, var_a, var_b = a.mean(), b.mean(), a.var(), b.var()
    cov = np.mean((a - mean_a) * (b - mean_b))
    assert_close_across_programs(stats.ccc(a, b), 2 * cov / (var_a + var_b + (mean_a - mean_b) ** 2), rtol=1e-5)
    za, zb = (a - mean_a) / a.std(), (b - mean_b) / b.std()  # equal means and variances: ccc = Pearson
    assert_close_across_programs(stats.ccc(za, zb), np.corrcoef(a, b)[0, 1], rtol=1e-5)
    assert float(stats.ccc(a, b)) < np.corrcoef(a, b)[0, 1]  # shift and scale are penalized


def test_spearman_matches_brute_force_ranks_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=300).astype(np.float32)
    b = (a + rng.integers(0, 4, size=300)).astype(np.float32)

    def brute_ranks(v):
        return np.array([1 + np.sum(v < x) + (np.sum(v == x) - 1) / 2 for x in v], np.float64)

    np.testing.assert_array_equal(stats.average_ranks(a), brute_ranks(a))
    expected = np.corrcoef(brute_ranks(a), brute_ranks(b))[0, 1]
    assert_close_across_programs(stats.spearman(a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(stats.spearman(a, np.exp(a)), 1.0, rtol=1e-6)  # monotone map


def test_mean_pairwise_ccc_is_the_mean_over_pairs():
    rows = np.random.default_rng(2).normal(size=(4, 50))
    expected = np.mean([float(stats.ccc(rows[i], rows[j])) for i, j in itertools.combinations(range(4), 2)])
    np.testing.assert_allclose(stats.mean_pairwise_ccc(rows), expected, rtol=1e-6)
    assert np.isnan(stats.mean_pairwise_ccc(rows[:1]))


A = np.array([0.61, 0.58, 0.70, 0.66, 0.59, np.nan])  # the last seed failed for A: its pair is dropped
B = np.array([0.55, 0.57, 0.62, 0.60, 0.58, 0.50])


def test_t_interval_equals_hand_formula_and_scipy():
    got = stats.paired_difference(A, B)
    d = A[:5] - B[:5]  # 0.06, 0.01, 0.08, 0.06, 0.01
    t_975_4 = 2.7764451051977987  # Student t table: 97.5% quantile, 4 degrees of freedom
    half = t_975_4 * d.std(ddof=1) / np.sqrt(5)
    assert (got["num_pairs"], got["num_dropped"], got["interval"], got["note"]) == (5, 1, "t", None)
    np.testing.assert_allclose([got["mean_difference"], got["lower"], got["upper"]],
                               [0.044, 0.044 - half, 0.044 + half], rtol=1e-12)
    reference = scipy_stats.ttest_rel(A[:5], B[:5])
    ci = reference.confidence_interval(0.9)
    got90 = stats.paired_difference(A, B, confidence=0.9)
    np.testing.assert_allclose([got90["lower"], got90["upper"]], [ci.low, ci.high], rtol=1e-10)
    np.testing.assert_allclose([got["t_statistic"], got["p_value"]], [reference.statistic, reference.pvalue],
                               rtol=1e-10)
    assert stats.verdict(got) == "A > B" and stats.verdict(stats.paired_difference(B, A)) == "A < B"


def test_bootstrap_is_the_documented_percentile_bootstrap_and_agrees_with_scipy():
    d = np.random.default_rng(3).normal(0.3, 1.0, size=12)
    got = stats.paired_difference(d, np.zeros(12), interval="bootstrap", seed=7, num_resamples=4000)
    rng = np.random.default_rng(7)
    means = np.array([d[i].mean() for i in rng.integers(0, 12, size=(4000, 12))])
    np.testing.assert_allclose([got["lower"], got["upper"]], np.percentile(means, [2.5, 97.5]), rtol=1e-12)
    assert (got["seed"], got["num_resamples"], got["interval"]) == (7, 4000, "bootstrap")
    np.testing.assert_allclose(got["mean_difference"], d.mean(), rtol=1e-12)
    # An independent implementation: scipy's percentile bootstrap; they agree up to Monte-Carlo error.
    ref = scipy_stats.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", rng=0).confidence_interval
    big = stats.paired_difference(d, np.zeros(12), interval="bootstrap", num_resamples=20_000)
    np.testing.assert_allclose([big["lower"], big["upper"]], [ref.low, ref.high], atol=0.02)
    other = stats.paired_difference(d, np.zeros(12), interval="bootstrap", seed=8, num_resamples=4000)
    assert other["lower"] != got["lower"]


@pytest.mark.parametrize("interval", stats.INTERVALS)
def test_edge_cases_one_pair_no_pair_zero_variance(interval):
    one = stats.paired_difference([0.7, np.nan], [0.5, 0.4], interval=interval)
    assert one["num_pairs"] == 1 and one["num_dropped"] == 1
    np.testing.assert_allclose(one["mean_difference"], 0.2)
    assert one["lower"] is None and one["upper"] is None and one["t_statistic"] is None and "no interval" in one["note"]
    assert stats.verdict(one) == "inconclusive"
    none = stats.paired_difference([np.nan, np.inf], [0.5, 0.4], interval=interval)
    assert none["num_pairs"] == 0 and none["mean_difference"] is None and none["lower"] is None
    same = stats.paired_difference([0.875, 0.75, 0.5], [0.75, 0.625, 0.375], interval=interval)  # d = 1/8 exactly
    assert same["mean_difference"] == 0.125 and same["std_difference"] == 0.0
    assert same["lower"] is None and same["upper"] is None  # sd 0: no interval can be formed, at any n
    assert same["t_statistic"] is None and "zero variance" in same["note"] and stats.verdict(same) == "inconclusive"
    tie = stats.paired_difference([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], interval=interval)
    assert (tie["lower"], tie["upper"], stats.verdict(tie)) == (None, None, "inconclusive")


def test_bad_arguments_raise_config_error():
    for kwargs in ({"interval": "z"}, {"confidence": 1.0}, {"confidence": 0}, {"num_resamples": 0}):
        with pytest.raises(ConfigError):
            stats.paired_difference([1.0, 2.0], [1.0, 2.0], **kwargs)
    with pytest.raises(ConfigError, match="one value per seed"):
        stats.paired_difference([1.0, 2.0], [1.0])


def rows():
    """Result rows as the experiments write them: per-seed arrays, ``failed_seeds``, a dense row at sparsity 0."""
    return [{"method": "dense", "sparsity": 0.0, "acc": np.array([0.9, 0.92, 0.91, 0.93])},
            {"method": "imp", "sparsity": 0.9, "acc": np.array([0.8, 0.82, 0.85, 0.81]), "failed_seeds": [3]},
            {"method": "imp", "sparsity": 0.5, "acc": np.array([0.88, 0.9, 0.89, 0.9])},
            {"method": "random", "sparsity": 0.9, "acc": np.array([0.6, 0.7, 0.62, 0.64])},
            {"method": "random", "sparsity": 0.5, "acc": np.array([0.87, 0.91, 0.88, 0.9])},
            {"method": "snip", "sparsity": 0.7, "acc": np.array([0.8, 0.8, 0.8, 0.8])}]


def test_comparisons_pair_rows_by_sparsity_and_drop_failed_seeds():
    out = stats.comparisons(rows(), "acc", [("imp", "random"), ("imp", "dense")], interval="bootstrap", seed=3)
    assert [(c["a"], c["b"], c["sparsity"]) for c in out] == [
        ("imp", "random", 0.5), ("imp", "random", 0.9), ("imp", "dense", 0.5), ("imp", "dense", 0.9)]
    for c in out:
        table = {(r["method"], r["sparsity"]): r["acc"] for r in rows()}
        a = table["imp", c["sparsity"]].copy()
        if c["sparsity"] == 0.9:
            a[3] = np.nan  # failed seed
        b = table["dense", 0.0] if c["b"] == "dense" else table[c["b"], c["sparsity"]]
        expected = stats.paired_difference(a, b, interval="bootstrap", seed=3)
        assert {k: c[k] for k in expected} == expected and c["metric"] == "acc"
        assert c["verdict"] == stats.verdict(expected)
    assert [c["num_pairs"] for c in out] == [4, 3, 4, 3]
    assert out[1]["verdict"] == "A > B" and out[3]["verdict"] == "A < B"


def test_comparisons_name_the_problem():
    for pairs, match in [([("imp", "grasp")], "no rows for method 'grasp'"),
                         ([("imp", "snip")], "no sparsity in common")]:
        with pytest.raises(ConfigError, match=match):
            stats.comparisons(rows(), "acc", pairs)
    with pytest.raises(ConfigError, match="metric 'loss'"):
        stats.comparisons(rows(), "loss", [("imp", "random")])
    with pytest.raises(ConfigError, match="two rows"):
        stats.comparisons(rows() + rows()[:1], "acc", [("imp", "dense")])
