"""Tests for jaxprune.mi against ensembles whose mutual information is known exactly.

Truths: masks drawn through a binary symmetric channel (BSC) from per-draw prototypes, D uniform over K draws,
M_j = prototype_D[j] XOR Bernoulli(flip). Then I(M; D) = H(M) - w·h(flip) over the w informative weights
(enumerated in float64), or for K = 2 the information in the sufficient statistic S = #agreements with
prototype 0 on the d weights where the prototypes differ. Weights that are fair coins independent of D add 0.
"""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs
from scipy import optimize, stats

from jaxprune import mi
from jaxprune.errors import ConfigError

TOLERANCE_BITS = 0.15


def binary_entropy(p: float) -> float:
    return float(stats.entropy([p, 1 - p], base=2))


def bsc_truth(prototypes: np.ndarray, flip: float) -> float:
    """I(M; D) = H(M) - w h(flip) by enumerating all 2^w masks, D uniform over the rows of ``prototypes``."""
    num_weights = prototypes.shape[1]
    patterns = np.array(list(itertools.product([0, 1], repeat=num_weights)))
    distance = (patterns[:, None, :] != prototypes[None]).sum(-1)
    p_mask = (flip**distance * (1 - flip) ** (num_weights - distance)).mean(1)
    return float(-(p_mask * np.log2(p_mask)).sum() - num_weights * binary_entropy(flip))


def hamming_truth(num_differing: int, flip: float) -> float:
    """I(S; D) for K = 2: S ~ Bin(d, 1 - flip) given D = 0 and Bin(d, flip) given D = 1."""
    s = np.arange(num_differing + 1)
    given = np.stack([stats.binom.pmf(s, num_differing, 1 - flip), stats.binom.pmf(s, num_differing, flip)])
    marginal = given.mean(0)
    return float(np.sum(0.5 * given * np.log2(given / marginal)))


def bsc_ensemble(rng, prototypes, flip, masks_per_draw, num_coins=0):
    """Masks through a BSC from ``prototypes`` [K, w], then ``num_coins`` independent fair-coin weights."""
    labels = np.repeat(np.arange(prototypes.shape[0]), masks_per_draw)
    informative = prototypes[labels] ^ (rng.random((labels.size, prototypes.shape[1])) < flip)
    coins = rng.random((labels.size, num_coins)) < 0.5
    return np.concatenate([informative, coins], axis=1), labels


def assert_honest(result: mi.MIResult, truth: float) -> None:
    assert result.lower <= result.bits <= result.upper
    assert result.lower <= truth + 1e-6 and truth <= result.upper + 1e-6, (result, truth)
    assert abs(result.bits - truth) <= TOLERANCE_BITS, (result, truth)


def test_truths_agree_for_two_prototypes():
    prototypes = np.array([[0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1]], bool)
    assert bsc_truth(prototypes, 0.2) == pytest.approx(hamming_truth(5, 0.2), abs=1e-12)


def test_plugin_bits_matches_float64_definition():
    table = np.random.default_rng(0).integers(0, 20, (7, 3)).astype(np.float64)
    table[2, 1] = 0
    n, joint = table.sum(), table / table.sum()
    entropy = lambda p: -np.sum(p[p > 0] * np.log2(p[p > 0])) + (np.sum(p > 0) - 1) / (2 * n * np.log(2))
    expected = entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint)
    pointwise = np.log2(joint / np.outer(joint.sum(1), joint.sum(0)), where=joint > 0, out=np.zeros_like(joint))
    plugin = np.sum(joint * pointwise)
    variance = np.sum(joint * (pointwise - plugin) ** 2) / n + 2 * 6 * 2 / (2 * n * np.log(2)) ** 2
    bits, se = mi.plugin_bits(jnp.asarray(table, jnp.float32))
    assert_close_across_programs([bits, se], [expected, np.sqrt(variance)], rtol=1e-4)


def test_fit_logistic_reaches_the_penalized_optimum():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(120, 4))
    labels = (features[:, 0] + rng.normal(size=120) > 0).astype(int) + (features[:, 1] > 0.5)
    onehot, weights, l1, l2 = np.eye(3)[labels], np.full(120, 1 / 120), 0.02, 0.05

    def objective(flat):  # coef = positive - negative part, as in L-BFGS-B for the lasso
        pos, neg, intercept = flat[:12].reshape(4, 3), flat[12:24].reshape(4, 3), flat[24:]
        coef = pos - neg
        logits = features @ coef + intercept
        log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -np.sum(weights[:, None] * onehot * log_probs) + l1 * np.sum(pos + neg) + l2 / 2 * np.sum(coef**2)

    bounds = [(0, None)] * 24 + [(None, None)] * 3
    best = optimize.minimize(objective, np.zeros(27), method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14})
    coef, intercept = mi.fit_logistic(
        jnp.asarray(features, jnp.float32), jnp.asarray(onehot, jnp.float32), jnp.asarray(weights, jnp.float32),
        l1, l2, num_steps=2000, learning_rate=0.05,
    )
    coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    reached = objective(np.concatenate([np.maximum(coef, 0).ravel(), np.maximum(-coef, 0).ravel(), intercept]))
    assert reached == pytest.approx(best.fun, abs=1e-5)
    np.testing.assert_allclose(coef, best.x[:12].reshape(4, 3) - best.x[12:24].reshape(4, 3), atol=2e-2)
    assert np.sum(coef == 0) == np.sum(np.abs(best.x[:12] - best.x[12:24]) < 1e-6)


def test_small_bsc_uses_plugin_and_is_exact():
    rng = np.random.default_rng(2)
    prototypes = rng.random((4, 6)) < 0.5
    masks, labels = bsc_ensemble(rng, prototypes, 0.1, 1000)
    result = mi.estimate(masks, labels)
    assert result.method == "plugin"
    assert_honest(result, bsc_truth(prototypes, 0.1))
    assert np.mean(result.null_bits) < 0.02 and np.max(result.null_bits) < result.lower


def test_plugin_sees_dependence_a_linear_classifier_cannot():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000)
    first = rng.random(2000) < 0.5
    masks = np.stack([first, first ^ labels.astype(bool)], axis=1)  # D = M_1 XOR M_2: 1 bit, no linear signal
    assert_honest(mi.estimate(masks, labels), 1.0)
    assert mi.estimate(masks, labels, method="classifier", num_permutations=1).bits < 0.05


def test_independence_in_thousands_of_weights_is_zero():
    rng = np.random.default_rng(4)
    masks, labels = rng.random((1000, 2000)) < 0.1, np.repeat(np.arange(4), 250)
    result = mi.estimate(masks, labels, num_permutations=1)
    assert result.method == "classifier"
    assert_honest(result, 0.0)


def test_identifiable_draws_give_log_k():
    rng = np.random.default_rng(5)
    prototypes = rng.random((8, 32)) < 0.5  # distinct rows, no flips: D is a function of M
    masks, labels = bsc_ensemble(rng, prototypes, 0.0, 100, num_coins=2000)
    result = mi.estimate(masks, labels, num_permutations=1)
    assert result.method == "classifier"
    assert_honest(result, 3.0)


def test_many_weak_bsc_weights_match_hamming_truth():
    rng = np.random.default_rng(6)
    prototypes = np.zeros((2, 40), bool)
    prototypes[1, :30] = True
    masks, labels = bsc_ensemble(rng, prototypes, 0.35, 600, num_coins=1000)
    result = mi.estimate(masks, labels, num_permutations=1)
    assert result.method == "classifier"
    assert_honest(result, hamming_truth(30, 0.35))


def test_handful_of_informative_weights_among_thousands():
    rng = np.random.default_rng(7)
    prototypes = rng.random((4, 5)) < 0.5
    masks, labels = bsc_ensemble(rng, prototypes, 0.15, 300, num_coins=2000)
    result = mi.estimate(masks, labels, num_permutations=1)
    assert result.method == "classifier"
    assert_honest(result, bsc_truth(prototypes, 0.15))
    assert np.max(result.null_bits) < 0.05 < result.lower


def test_fit_binary_logistic_columns_are_independent_penalized_optima():
    rng = np.random.default_rng(9)
    features = rng.normal(size=(150, 5))
    targets = np.stack([features[:, 0] + rng.normal(size=150) > 0, features[:, 1] - features[:, 2] > 0.3,
                        rng.random(150) < 0.3], axis=1).astype(np.float64)
    weights = rng.random((150, 3)) * (rng.random((150, 3)) < 0.8)
    weights /= weights.sum(0)
    l1, l2 = np.array([0.02, 0.0, 0.05]), np.array([0.05, 0.1, 0.0])
    coef, intercept = mi.fit_binary_logistic(*[jnp.asarray(a, jnp.float32) for a in (features, targets, weights,
                                                                                        l1, l2)], 3000, 0.05)
    for c in range(3):
        def objective(flat, c=c):  # coef = positive - negative part, as in L-BFGS-B for the lasso
            beta = flat[:5] - flat[5:10]
            logits = features @ beta + flat[10]
            ce = np.logaddexp(0, logits) - targets[:, c] * logits
            return weights[:, c] @ ce + l1[c] * np.sum(flat[:10]) + l2[c] / 2 * np.sum(beta**2)

        best = optimize.minimize(objective, np.zeros(11), method="L-BFGS-B", bounds=[(0, None)] * 10 + [(None, None)],
                                 options={"ftol": 1e-15, "gtol": 1e-10})
        beta = np.asarray(coef[:, c], np.float64)
        reached = objective(np.concatenate([np.maximum(beta, 0), np.maximum(-beta, 0), [float(intercept[c])]]))
        assert reached == pytest.approx(best.fun, abs=1e-5)
        np.testing.assert_allclose(beta, best.x[:5] - best.x[5:10], atol=2e-2)


def test_noise_bits_bound_sums_per_bit_information():
    rng = np.random.default_rng(8)
    flips = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.5])
    noise = rng.random((1000, flips.size)) < 0.5
    copies = noise ^ (rng.random(noise.shape) < flips)  # weight j carries bit j through BSC(flips[j])
    masks = np.concatenate([copies, rng.random((1000, 500)) < 0.5], axis=1)
    truth = sum(1 - binary_entropy(f) for f in flips)  # I(M; Z) = Σ_j I(z_j; M_j): bits and weights pair up
    result = mi.noise_bits_bound(masks, noise)
    assert_honest(result, truth)
    assert result.bits > 2.0 and result.upper == flips.size  # more than log2 of any small number of draws


def test_noise_bits_spread_weakly_over_several_weights():
    rng = np.random.default_rng(10)
    num_bits, copies, flip = 8, 5, 0.35
    noise = rng.random((800, num_bits)) < 0.5
    spread = np.repeat(noise, copies, axis=1) ^ (rng.random((800, num_bits * copies)) < flip)
    masks = np.concatenate([spread, rng.random((800, 400)) < 0.5], axis=1)
    truth = num_bits * hamming_truth(copies, flip)  # each bit: the number of agreeing copies is sufficient
    result = mi.noise_bits_bound(masks, noise)
    # a decoder learned from 640 masks recovers ~86% of these weak, diffuse bits (~90% when fitted on the 40
    # informative weights alone): the tolerance is relative here
    assert result.lower <= result.bits <= truth <= result.upper
    assert result.bits >= 0.8 * truth
    assert np.max(result.null_bits) < 0.1 < result.lower


def test_noise_bits_independent_of_masks_give_zero():
    rng = np.random.default_rng(11)
    masks, noise = rng.random((400, 1000)) < 0.3, rng.random((400, 64)) < 0.5
    result = mi.noise_bits_bound(masks, noise, num_permutations=2)
    assert_honest(result, 0.0)
    assert result.bits < 0.1 and np.max(result.null_bits) < 0.1


def test_noise_bits_are_decoded_out_of_sample():
    # 1000 coin weights for 100 masks: an in-sample decoder with a weak ridge penalty separates every bit
    # perfectly (~1 bit each); held out, the same decoder knows nothing.
    rng = np.random.default_rng(12)
    masks, noise = rng.random((100, 1000)) < 0.5, rng.random((100, 16)) < 0.5
    result = mi.noise_bits_bound(masks, noise, penalties=[(0.0, 1e-4)])
    assert result.bits == 0.0 and result.lower == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(masks=np.zeros((4, 3, 2))), "masks must be"),
        (dict(masks=np.full((4, 3), 2)), "boolean"),
        (dict(labels=np.zeros(5)), "labels must have shape"),
        (dict(labels=np.zeros(4)), "at least 2"),
        (dict(method="kraskov"), "method='kraskov'"),
        (dict(num_folds=1), "num_folds=1"),
        (dict(penalties=[(0.1,)]), "penalties="),
    ],
)
def test_bad_input_raises_config_error(kwargs, message):
    arguments = dict(masks=np.zeros((4, 3), bool), labels=np.array([0, 1, 0, 1])) | kwargs
    with pytest.raises(ConfigError, match=message):
        mi.estimate(arguments.pop("masks"), arguments.pop("labels"), **arguments)


def test_noise_must_be_binary_and_aligned():
    with pytest.raises(ConfigError, match="noise must be"):
        mi.noise_bits_bound(np.zeros((4, 3), bool), np.full((4, 2), 3))
    with pytest.raises(ConfigError, match="selection_bits=0"):
        mi.noise_bits_bound(np.zeros((4, 3), bool), np.zeros((4, 2)), selection_bits=0)



def test_ridge_decoders_are_unchanged_by_the_row_space_rotation():
    rng = np.random.default_rng(13)
    masks = rng.random((60, 200)) < 0.4
    masks[:, :3] = True  # constant weights are dropped
    noise = rng.random((2, 60, 4)) < 0.5
    noise[0, :, 0] = masks[:, 5] ^ (rng.random(60) < 0.1)
    folds, penalties = jnp.asarray(np.arange(60) % 3), jnp.asarray([[0.0, 0.3], [0.0, 0.03]])
    rotated = mi.decoder_features(masks, ridge_only=True)
    assert rotated.shape == (60, 60) and mi.decoder_features(masks, ridge_only=False).shape == (60, 197)
    gains = [mi.noise_bit_gains(features, jnp.asarray(noise, jnp.float32), folds, penalties, selection_bits=2,
                                num_folds=3, num_steps=3000, learning_rate=0.02)
             for features in (mi.standardize(jnp.asarray(masks)), rotated)]
    np.testing.assert_allclose(gains[0], gains[1], atol=2e-3)


def test_unreadable_bits_add_no_regret_to_the_sum():
    # one bit readable (1 - h(0.1) = 0.53 bits) among 96 that no decoder can read: fitting an intercept on 160
    # masks costs ~0.005 bits per bit held out, ~0.4 bits over 95 bits, unless such bits claim 0
    rng = np.random.default_rng(14)
    noise = rng.random((200, 96)) < 0.5
    copy = noise[:, :1] ^ (rng.random((200, 1)) < 0.1)
    masks = np.concatenate([copy, rng.random((200, 300)) < 0.5], axis=1)
    result, alone = mi.noise_bits_bound(masks, noise), mi.noise_bits_bound(masks, noise[:, :1])
    assert result.lower <= result.bits <= result.upper and result.lower <= 1 - binary_entropy(0.1)
    assert alone.bits - 0.1 <= result.bits <= alone.bits + 0.05, (result, alone)
