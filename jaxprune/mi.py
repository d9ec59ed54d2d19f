"""Mutual information between pruning masks and the data that produced them, in bits.

No Free Prune's effective parameter count is ``E||m||_0 + I(M; D)``: D is the dataset draw, M the mask a
pruning method returns on it. Given an ensemble of masks ``masks[i]`` (bool, [num_masks, num_weights]) with
``labels[i]`` naming the draw that produced mask i, :func:`estimate` estimates I(M; D) with one of two
estimators, chosen per regime:

``plugin`` (few distinct mask patterns: exact structure)
    Î = H(D) + H(M) - H(M, D) from the contingency table of (pattern, label) counts, each entropy with the
    Miller–Madow correction H_MM = H_plugin + (cells - 1) / (2 N ln 2) bits, which removes the O(1/N) upward
    bias of plug-in MI, Î_MM = Î_plugin - (P - 1)(K - 1) / (2 N ln 2) when all cells are occupied. Any
    dependence between pattern and label is captured, linear or not (e.g. D = M_1 XOR M_2).
    Interval: bits ± z·se with se² = Var[i(M; D)] / N (delta method, i the pointwise MI
    log2 p(m, d) / (p(m) p(d)) under the empirical law) + 2 (P - 1)(K - 1) / (2 N ln 2)² (the variance of the
    chi-square term that dominates when I is near 0), clipped to [0, log2 K].

``classifier`` (many distinct patterns: thousands of weights)
    For any predictor q of D from M, I(M; D) = H(D) - H(D | M) >= H(D) - E[-log2 q(D | M)]. q is a multinomial
    logistic regression on the standardized mask bits, cross-fitted over ``num_folds`` folds (the loss of mask i
    comes from a model that never saw it), with one unpenalized intercept per class and an (L1, L2) penalty from a
    grid. Folds and penalties are fitted in one vmapped, jitted computation. The penalty of fold f is the one with
    the least held-out loss on the *other* folds, so no mask's reported loss chose its own penalty. With
    d_i = -log2 p̂(y_i) + log2 q_(-fold i)(y_i | m_i) (p̂ the label frequencies) the estimate is mean(d), and
    ``lower`` = mean(d) - z·std(d)/sqrt(N) (CLT over masks) is a lower confidence bound on I. The bound is tight
    when the Bayes classifier is in the model class: for masks drawn through a binary symmetric channel from
    per-draw prototypes, log p(d | m) is linear in m, so it is. No sample-based upper bound exists in this regime
    without a model of p(m | d), so ``upper`` is log2 K (I <= H(D) <= log2 K).

``auto`` picks ``plugin`` when the table has at least ``min_per_cell`` masks per cell on average
(N >= min_per_cell · P · K, P the number of distinct patterns), else ``classifier``.

Every estimate comes with a permutation null: the same estimator on labels shuffled across masks
(``null_bits``, one value per permutation; report e.g. its mean and max). An estimate well above the null's
spread is evidence of real mask–data dependence.

:func:`noise_bits_bound` serves the label-noise design, where example j of every dataset draw carries a random
bit z_j: I(M; Z) >= Σ_j I(M; z_j) when the z_j are independent, each term bounded below by the cross-entropy
gap H(z_j) - CE_j of a cross-fitted binary decoder of z_j from the mask. The per-mask terms are summed over j
before the CLT interval, which can far exceed log2 of the number of draws. All bits, folds, penalties and
permutations are columns of one batched logistic fit on the shared mask matrix (:func:`fit_binary_logistic`).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.errors import ConfigError

METHODS = ("auto", "plugin", "classifier")
# (l1, l2) strengths on the mean log-loss with standardized features: intercept-only (|gradient| <= 1 per
# coefficient, so l1 = 2 keeps every coefficient at 0), a lasso path, and two ridge fits for diffuse signals.
ADAM_B2, ADAM_EPS = 0.999, 1e-8
DEFAULT_PENALTIES = ((2.0, 0.0), (0.1, 0.0), (0.03, 0.0), (0.01, 0.0), (0.003, 0.0), (0.0, 1e-2), (0.0, 1e-3))


class MIResult(NamedTuple):
    """An MI estimate in bits with a confidence interval and a permutation null.

    ``lower <= bits <= upper``; ``null_bits[p]`` is the same estimator on the p-th label permutation.
    ``method`` names the estimator used ("plugin" or "classifier").
    """

    bits: float
    lower: float
    upper: float
    null_bits: np.ndarray
    method: str


# ----------------------------------------------------------------------------------------------------------
# Plug-in estimator with Miller–Madow correction.


def plugin_bits(table: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Miller–Madow I(M; D) in bits and its standard error, from a [patterns, labels] table of counts.

    Î = Σ_md p̂(m,d) log2 p̂(m,d) / (p̂(m) p̂(d)) - (c_MD - c_M - c_D + 1) / (2 N ln 2), with c_X the number of
    occupied cells of X; se² = Var_p̂[i(M; D)] / N + 2 (c_M - 1)(c_D - 1) / (2 N ln 2)² (see module docstring).
    """
    n = table.sum()
    joint = table / n
    row, col = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    pointwise = jnp.where(joint > 0, jnp.log2(jnp.where(joint > 0, joint, 1.0) / (row * col)), 0.0)
    mean = jnp.sum(joint * pointwise)
    occupied = lambda p: jnp.sum(p > 0)
    c_md, c_m, c_d = occupied(joint), occupied(row), occupied(col)
    miller_madow = (c_md - c_m - c_d + 1) / (2 * n * jnp.log(2.0))
    chi2_var = 2 * (c_m - 1) * (c_d - 1) / (2 * n * jnp.log(2.0)) ** 2
    first_order_var = jnp.sum(joint * (pointwise - mean) ** 2) / n
    return mean - miller_madow, jnp.sqrt(first_order_var + chi2_var)


@partial(jax.jit, static_argnames=("num_patterns", "num_labels"))
def _plugin_with_null(
    pattern_ids: jax.Array, labels: jax.Array, permutations: jax.Array, num_patterns: int, num_labels: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(Miller–Madow bits, se, bits under each row of ``permutations`` applied to the labels)."""
    table_of = lambda y: jnp.zeros((num_patterns, num_labels)).at[pattern_ids, y].add(1.0)
    bits, se = plugin_bits(table_of(labels))
    null = jax.vmap(lambda perm: plugin_bits(table_of(labels[perm]))[0])(permutations)
    return bits, se, null


def entropy_bits(samples) -> tuple[float, float]:
    """(plug-in, Miller–Madow) entropy in bits of the discrete ``samples`` [N] (any hashable values).

    Plug-in: Ĥ = −Σ_x (c_x / N) log2(c_x / N) over the K observed values x with counts c_x; it is biased low,
    E Ĥ = H − (K − 1) / (2 N ln 2) + O(1/N²). Miller–Madow adds that first-order term back:
    Ĥ_MM = Ĥ + (K − 1) / (2 N ln 2). For a deterministic mask m(D), H(m) = I(m; D) (the toy MI experiment).
    """
    _, counts = np.unique(np.asarray(samples), return_counts=True)
    n = counts.sum()
    p = counts / n
    plugin = max(float(-np.sum(p * np.log2(p))), 0.0) + 0.0  # + 0.0: no -0.0
    return plugin, plugin + (len(counts) - 1) / (2 * n * np.log(2.0))


# ----------------------------------------------------------------------------------------------------------
# Cross-fitted logistic-regression bound.


def standardize(masks: jax.Array) -> jax.Array:
    """(m - mean) / std per weight over the ensemble; constant weights (std 0) become 0. Uses no labels."""
    m = masks.astype(jnp.float32)
    mean, std = m.mean(0), m.std(0)
    return jnp.where(std > 0, (m - mean) / jnp.where(std > 0, std, 1.0), 0.0)


def proximal_adam(gradient, params, l1, num_steps: int, learning_rate: float):
    """Minimize smooth(coef, intercept) + Σ l1 ⊙ |coef| from ``params`` = (coef, intercept), ``gradient`` the
    gradient of the smooth part: an Adam step on it, then soft-thresholding of each coefficient at its own Adam
    step size times l1 (the exact prox in Adam's diagonal metric), cosine-decayed learning rate, ``num_steps``
    steps of a ``lax.scan``. ``l1`` broadcasts against coef (a scalar, or one value per column)."""
    adam = optax.scale_by_adam(b2=ADAM_B2, eps=ADAM_EPS)

    def step(carry, lr):
        params, state = carry
        direction, state = adam.update(gradient(params), state)
        coef, intercept = jax.tree.map(lambda p, d: p - lr * d, params, direction)
        nu_hat = state.nu[0] / (1 - ADAM_B2 ** state.count.astype(jnp.float32))
        threshold = lr * l1 / (jnp.sqrt(nu_hat) + ADAM_EPS)
        coef = jnp.sign(coef) * jnp.maximum(jnp.abs(coef) - threshold, 0.0)
        return ((coef, intercept), state), None

    lrs = optax.cosine_decay_schedule(learning_rate, num_steps)(jnp.arange(num_steps))
    (params, _), _ = jax.lax.scan(step, (params, adam.init(params)), lrs)
    return params


def decoder_features(masks: np.ndarray, ridge_only: bool) -> jax.Array:
    """The decoders' design matrix [N, W'] from bool masks [N, W]: :func:`standardize`, without the weights that
    are constant over the ensemble (their standardized column is 0: dropping it changes no fit). If ``ridge_only``
    (every penalty pure L2) and W' > N, the rotation X = U S V^T -> U S onto the row space: a ridge optimum
    β = V γ lies in the row space of its training rows and ||β|| = ||γ||, so every fit and loss is unchanged while
    each step costs N instead of W' per row. Uses no labels."""
    features = standardize(jnp.asarray(masks[:, masks.min(0) != masks.max(0)]))
    if not ridge_only or features.shape[1] <= features.shape[0]:
        return features
    u, singular, _ = jnp.linalg.svd(features, full_matrices=False)
    return u * singular


def fit_logistic(
    features: jax.Array,
    onehot: jax.Array,
    weights: jax.Array,
    l1: jax.Array,
    l2: jax.Array,
    num_steps: int,
    learning_rate: float,
) -> tuple[jax.Array, jax.Array]:
    """Multinomial logistic regression: (coef [W, K], intercept [K]) minimizing

        Σ_i weights_i · CE(softmax(features_i @ coef + intercept), onehot_i) + l1 ||coef||_1 + l2/2 ||coef||²

    (``weights`` sum to 1; the intercept is unpenalized) by :func:`proximal_adam`, from coef = 0 and the
    intercept of the weighted class frequencies.
    """
    def smooth_loss(params):
        coef, intercept = params
        log_probs = jax.nn.log_softmax(features @ coef + intercept)
        return -jnp.sum(weights[:, None] * onehot * log_probs) + 0.5 * l2 * jnp.sum(coef**2)

    frequencies = weights @ onehot
    params = (jnp.zeros((features.shape[1], onehot.shape[1])), jnp.log(jnp.maximum(frequencies, 1e-6)))
    return proximal_adam(jax.grad(smooth_loss), params, l1, num_steps, learning_rate)


def fit_binary_logistic(
    features: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    l1: jax.Array,
    l2: jax.Array,
    num_steps: int,
    learning_rate: float,
) -> tuple[jax.Array, jax.Array]:
    """C binary logistic regressions on one design matrix, one per column c: (coef [W, C], intercept [C])
    minimizing, for every c,

        Σ_i weights_ic · CE(σ(features_i · coef_c + intercept_c), targets_ic) + l1_c ||coef_c||_1 + l2_c/2 ||coef_c||²

    (``targets``, ``weights`` [N, C], each weight column summing to 1; ``l1``, ``l2`` [C]). The gradient of the
    smooth part is features^T (weights ⊙ (σ(logits) - targets)) + l2 ⊙ coef, so each step costs one [N, W] x [W, C]
    product and one [W, N] x [N, C] product for all C fits. :func:`proximal_adam` from coef = 0 and the intercept
    of the weighted target frequency.
    """
    def gradient(params):
        coef, intercept = params
        residual = weights * (jax.nn.sigmoid(features @ coef + intercept) - targets)
        return features.T @ residual + l2 * coef, residual.sum(0)

    frequency = jnp.clip(jnp.sum(weights * targets, axis=0), 1e-6, 1 - 1e-6)
    params = (jnp.zeros((features.shape[1], targets.shape[1])), jnp.log(frequency) - jnp.log1p(-frequency))
    return proximal_adam(gradient, params, l1, num_steps, learning_rate)


def heldout_log_loss(
    features: jax.Array,
    onehot: jax.Array,
    fold_of: jax.Array,
    penalties: jax.Array,
    num_folds: int,
    num_steps: int,
    learning_rate: float,
) -> jax.Array:
    """Cross-fitted per-example log-loss in bits, [N]: -log2 q(y_i | m_i), q fitted without fold(i).

    All folds × penalties are fitted at once (vmapped). Fold f uses the penalty with the least total held-out
    loss over the other folds.
    """
    in_fold = fold_of[None, :] == jnp.arange(num_folds)[:, None]  # [F, N]
    train_weights = ~in_fold / jnp.sum(~in_fold, axis=1, keepdims=True)
    fit = partial(fit_logistic, features, onehot, num_steps=num_steps, learning_rate=learning_rate)
    fit_penalties = jax.vmap(lambda w, pen: fit(w, pen[0], pen[1]), in_axes=(None, 0))
    coef, intercept = jax.vmap(fit_penalties, in_axes=(0, None))(train_weights, penalties)  # [F, G, ...]
    log_probs = jax.nn.log_softmax(jnp.einsum("nw,fgwk->fgnk", features, coef) + intercept[:, :, None])
    losses = -jnp.sum(onehot * log_probs, axis=-1) / jnp.log(2.0)  # [F, G, N]
    fold_loss = jnp.sum(jnp.where(in_fold[:, None], losses, 0.0), axis=-1)  # [F, G]
    chosen = jnp.argmin(fold_loss.sum(0, keepdims=True) - fold_loss, axis=1)  # [F]
    heldout = losses[jnp.arange(num_folds), chosen]  # [F, N]
    return heldout[fold_of, jnp.arange(fold_of.shape[0])]


@partial(jax.jit, static_argnames=("num_classes", "num_folds", "num_steps", "learning_rate"))
def classifier_gain(
    features: jax.Array,
    labels: jax.Array,
    fold_of: jax.Array,
    penalties: jax.Array,
    num_classes: int,
    num_folds: int,
    num_steps: int,
    learning_rate: float,
) -> jax.Array:
    """Per-mask information gain in bits, [N]: -log2 p̂(y_i) + log2 q(y_i | m_i) for integer ``labels`` [N],
    p̂ the class frequencies, q the cross-fitted decoder (:func:`heldout_log_loss`)."""
    onehot = jax.nn.one_hot(labels, num_classes)  # [N, K]
    marginal = -jnp.sum(onehot * jnp.log2(jnp.maximum(onehot.mean(0), 1e-12)), axis=-1)
    return marginal - heldout_log_loss(features, onehot, fold_of, penalties, num_folds, num_steps, learning_rate)


# ----------------------------------------------------------------------------------------------------------
# Noise-bit bound: every bit, fold, penalty and permutation is a column of one batched fit.


def heldout_bit_losses(
    features: jax.Array,
    targets: jax.Array,
    fold_of: jax.Array,
    l1: jax.Array,
    l2: jax.Array,
    num_folds: int,
    num_steps: int,
    learning_rate: float,
) -> jax.Array:
    """Cross-fitted -log2 q_tg(z_it | m_i) in bits, [N, T, G], for 0/1 ``targets`` [N, T]: the decoder of row i
    is fitted without the rows of fold(i), with penalty (l1[t, f, g], l2[t, f, g]) (arrays broadcasting to
    [T, F, G]). All T · F · G fits are columns of one :func:`fit_binary_logistic` call."""
    n, num_targets = targets.shape
    shape = (num_targets, num_folds, jnp.broadcast_shapes(l1.shape, l2.shape)[-1])
    in_train = fold_of[:, None] != jnp.arange(num_folds)[None, :]  # [N, F]
    weights = in_train / jnp.sum(in_train, axis=0)
    columns = lambda a: jnp.broadcast_to(a, (n, *shape)).reshape(n, -1)  # noqa: E731  column (t, f, g)
    coef, intercept = fit_binary_logistic(
        features, columns(targets[:, :, None, None]), columns(weights[:, None, :, None]),
        jnp.broadcast_to(l1, shape).reshape(-1), jnp.broadcast_to(l2, shape).reshape(-1), num_steps, learning_rate)
    logits = (features @ coef + intercept).reshape(n, *shape)
    own = jnp.take_along_axis(logits, fold_of[:, None, None, None], axis=2)[:, :, 0]  # [N, T, G]
    return (jax.nn.softplus(own) - targets[:, :, None] * own) / jnp.log(2.0)


@partial(jax.jit, static_argnames=("selection_bits", "num_folds", "num_steps", "learning_rate"))
def noise_bit_gains(
    features: jax.Array,
    bit_sets: jax.Array,
    fold_of: jax.Array,
    penalties: jax.Array,
    selection_bits: int,
    num_folds: int,
    num_steps: int,
    learning_rate: float,
) -> jax.Array:
    """Per-mask information gain in bits, [Q, N]: Σ_j [-log2 p̂_qj(z_qij) + log2 q_qj(z_qij | m_i)] for each of
    the Q bit sets ``bit_sets`` [Q, N, B] (the noise and its row permutations), p̂_qj the frequency of bit j.

    Every bit is decoded at one penalty per (bit set q, fold f), and bit j's gain on fold f counts only if the
    decoder of bit j gained (Σ of its gains > 0) on the OTHER folds; else 0 is claimed for it there
    (I(M; z_j) >= 0 always holds), so the bits a decoder cannot read add no negative regret to the sum. The
    penalty of (q, f) is chosen by that same rule: the first ``selection_bits`` bits are decoded at every penalty,
    and fold f gets the one with the largest Σ_j max(0, gain of bit j on the other folds). Two batched fits."""
    num_sets, n, num_bits = bit_sets.shape
    targets = jnp.moveaxis(bit_sets, 1, 0)  # [N, Q, B]
    losses = partial(heldout_bit_losses, features, fold_of=fold_of, num_folds=num_folds, num_steps=num_steps,
                     learning_rate=learning_rate)
    frequency = jnp.clip(targets.mean(0), 1e-12, 1 - 1e-12)  # [Q, B]
    marginal = -jnp.log2(jnp.where(targets > 0, frequency, 1 - frequency))  # [N, Q, B]
    in_fold = jax.nn.one_hot(fold_of, num_folds)

    def other_folds(gain):  # [N, Q, B, ...] -> [Q, B, F, ...]: each bit's summed gain outside each fold
        fold_gain = jnp.einsum("nf,nqb...->qbf...", in_fold, gain)
        return fold_gain.sum(2, keepdims=True) - fold_gain

    chosen_bits = targets[:, :, :selection_bits].reshape(n, -1)
    grid = losses(chosen_bits, l1=penalties[None, None, :, 0], l2=penalties[None, None, :, 1])  # [N, Q·S, G]
    grid = marginal[:, :, :selection_bits, None] - grid.reshape(n, num_sets, -1, penalties.shape[0])
    chosen = jnp.argmax(jnp.maximum(other_folds(grid), 0.0).sum(1), axis=-1)  # [Q, F]
    per_column = lambda a: jnp.repeat(a[chosen], num_bits, axis=0)[:, :, None]  # noqa: E731  [Q·B, F, 1]
    conditional = losses(targets.reshape(n, -1), l1=per_column(penalties[:, 0]), l2=per_column(penalties[:, 1]))
    gain = marginal - conditional.reshape(n, num_sets, num_bits)
    claimed = other_folds(gain) > 0  # [Q, B, F]: the decoder of the bit gained on the other folds
    return jnp.sum(jnp.where(jnp.moveaxis(claimed[:, :, fold_of], -1, 0), gain, 0.0), axis=-1).T


# ----------------------------------------------------------------------------------------------------------
# Public API.


def _checked_masks(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[0] < 2:
        raise ConfigError(f"masks must be [num_masks >= 2, num_weights], got shape {masks.shape}")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise ConfigError("masks must be boolean (or 0/1), got other values")
    return masks.astype(bool)


def _checked_options(num_folds: int, num_permutations: int, confidence: float, penalties) -> np.ndarray:
    if num_folds < 2:
        raise ConfigError(f"num_folds={num_folds}: must be >= 2")
    if num_permutations < 1:
        raise ConfigError(f"num_permutations={num_permutations}: must be >= 1")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence}: must be in (0, 1)")
    penalties = np.asarray(penalties, np.float32)
    if penalties.ndim != 2 or penalties.shape[1] != 2 or (penalties < 0).any():
        raise ConfigError(f"penalties={penalties.tolist()}: must be a list of non-negative (l1, l2) pairs")
    return penalties


def _stratified_folds(labels: np.ndarray, num_folds: int, key: jax.Array) -> jax.Array:
    """Fold index per example: a random order within each label, dealt round-robin into the folds."""
    order = np.lexsort((np.asarray(jax.random.uniform(key, labels.shape)), labels))
    fold_of = np.empty(labels.shape[0], np.int32)
    fold_of[order] = np.arange(labels.shape[0]) % num_folds
    return jnp.asarray(fold_of)


def _permutations(key: jax.Array, num_permutations: int, n: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, num_permutations))


def _two_sided_z(confidence: float) -> float:
    return float(jax.scipy.special.ndtri(0.5 + confidence / 2))


def _classifier_result(
    masks: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    key: jax.Array,
    *,
    num_folds: int,
    num_permutations: int,
    confidence: float,
    penalties: np.ndarray,
    num_steps: int,
    learning_rate: float,
) -> MIResult:
    """:func:`classifier_gain` on ``labels`` [N] and on permutations of them, summarized in bits (folds stratified
    by label; bits = mean gain, lower = the lower end of its CLT interval, upper = log2 num_labels)."""
    fold_key, perm_key = jax.random.split(key)
    folds = _stratified_folds(labels, num_folds, fold_key)
    permutations = _permutations(perm_key, num_permutations, labels.shape[0])
    features, labels = standardize(jnp.asarray(masks)), jnp.asarray(labels)
    gain = partial(
        classifier_gain, features, fold_of=folds, penalties=jnp.asarray(penalties), num_classes=num_labels,
        num_folds=num_folds, num_steps=num_steps, learning_rate=learning_rate,
    )
    gains = jax.vmap(gain)(jnp.concatenate([labels[None], labels[permutations]]))  # [1 + P, N]
    return _gain_summary(gains, float(np.log2(num_labels)), confidence)


def _gain_summary(gains: jax.Array, max_bits: float, confidence: float) -> MIResult:
    """MIResult from per-mask gains [1 + P, N] (row 0 the data, the rest permutations): bits = the mean gain,
    lower = the lower end of its two-sided CLT interval, upper = max_bits, each null the mean of its row; all
    clipped to [0, max_bits]."""
    mean = jnp.mean(gains, axis=1)
    bits = float(jnp.clip(mean[0], 0.0, max_bits))
    half_width = _two_sided_z(confidence) * jnp.std(gains[0]) / np.sqrt(gains.shape[1])
    lower = float(jnp.clip(mean[0] - half_width, 0.0, bits))
    return MIResult(bits, lower, max_bits, np.asarray(jnp.clip(mean[1:], 0.0, max_bits)), "classifier")


def _plugin_result(pattern_ids: np.ndarray, labels: np.ndarray, num_patterns: int, num_labels: int, key: jax.Array,
                   num_permutations: int, confidence: float) -> MIResult:
    """The plug-in estimate of :func:`estimate` from the masks' pattern ids and the label ids: bits clipped to
    [0, log2 K], the CLT interval bits ± z·se clipped to [0, bits] and [bits, log2 K], and the null of
    ``num_permutations`` label permutations drawn from ``key``."""
    max_bits = float(np.log2(num_labels))
    permutations = _permutations(key, num_permutations, labels.shape[0])
    bits, se, null = _plugin_with_null(
        jnp.asarray(pattern_ids), jnp.asarray(labels), permutations, num_patterns, num_labels
    )
    bits = float(jnp.clip(bits, 0.0, max_bits))
    z = _two_sided_z(confidence)
    lower, upper = float(jnp.clip(bits - z * se, 0.0, bits)), float(jnp.clip(bits + z * se, bits, max_bits))
    return MIResult(bits, lower, upper, np.asarray(jnp.clip(null, 0.0, max_bits)), "plugin")


def estimate(
    masks,
    labels,
    *,
    method: str = "auto",
    key: jax.Array | None = None,
    num_folds: int = 5,
    num_permutations: int = 4,
    confidence: float = 0.95,
    penalties=DEFAULT_PENALTIES,
    min_per_cell: float = 5.0,
    num_steps: int = 100,
    learning_rate: float = 0.1,
) -> MIResult:
    """I(M; D) in bits, where ``labels[i]`` is the dataset draw that produced ``masks[i]``.

    Args:
      masks: bool [num_masks, num_weights] (flatten a mask pytree with ``masks.prunable_leaves``).
      labels: [num_masks] draw ids (any K >= 2 distinct values).
      method: "plugin", "classifier" or "auto" (see module docstring for the rule).
      key: randomness for folds and permutations (default ``jax.random.key(0)``).
      num_folds, penalties, num_steps, learning_rate: the cross-fitted classifier (ignored by plugin).
      num_permutations: label shuffles for ``null_bits``.
      confidence: two-sided level of the CLT interval; the classifier's ``lower`` is its lower end.
      min_per_cell: ``auto`` uses plugin when num_masks >= min_per_cell · (distinct patterns) · K.
    """
    masks = _checked_masks(masks)
    labels = np.asarray(labels)
    if labels.shape != masks.shape[:1]:
        raise ConfigError(f"labels must have shape ({masks.shape[0]},) to match masks, got {labels.shape}")
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: allowed values are {METHODS}")
    penalties = _checked_options(num_folds, num_permutations, confidence, penalties)
    _, labels = np.unique(labels, return_inverse=True)
    num_labels = int(labels.max()) + 1
    if num_labels < 2:
        raise ConfigError("labels must name at least 2 distinct dataset draws")
    key = jax.random.key(0) if key is None else key
    _, pattern_ids = np.unique(np.packbits(masks, axis=1), axis=0, return_inverse=True)
    num_patterns = int(pattern_ids.max()) + 1
    if method == "plugin" or (method == "auto" and masks.shape[0] >= min_per_cell * num_patterns * num_labels):
        return _plugin_result(pattern_ids.ravel(), labels, num_patterns, num_labels, key, num_permutations,
                              confidence)
    return _classifier_result(
        masks, labels, num_labels, key, num_folds=num_folds,
        num_permutations=num_permutations, confidence=confidence, penalties=penalties, num_steps=num_steps,
        learning_rate=learning_rate,
    )


def noise_bits_bound(
    masks,
    noise,
    *,
    key: jax.Array | None = None,
    num_folds: int = 5,
    num_permutations: int = 1,
    confidence: float = 0.95,
    penalties=DEFAULT_PENALTIES,
    selection_bits: int = 32,
    num_steps: int = 100,
    learning_rate: float = 0.1,
) -> MIResult:
    """Lower bound on I(M; Z) in bits from independent noise bits ``noise`` [num_masks, n] (Z = (z_1..z_n)).

    Maths. (1) With z_1..z_n independent, I(M; Z) = Σ_j I(M; z_j | z_<j) >= Σ_j I(M; z_j), since
    I(M; z_j | z_<j) = I(M, z_<j; z_j) >= I(M; z_j) when z_j ⊥ z_<j. (2) For any decoder q(z_j | m) chosen
    without (m_i, z_ij), E[-log2 q(z_ij | M_i)] = H(z_j | M) + KL >= H(z_j | M), so
    I(M; z_j) = H(z_j) - H(z_j | M) >= H(z_j) - CE_j: the cross-entropy gap of a held-out decoder. Here q is a
    binary logistic regression on the standardized mask bits with an (L1, L2) penalty, cross-fitted over
    ``num_folds`` folds (mask i's bits are decoded by models that never saw mask i), H(z_j) the plug-in entropy
    of bit j. Per mask, d_i = Σ_j [-log2 p̂_j(z_ij) + log2 q_(-fold i), j(z_ij | m_i)]; ``bits`` = mean(d) and
    ``lower`` = mean(d) - z·std(d)/sqrt(N) (CLT over masks), which can far exceed log2 of any number of dataset
    draws; ``upper`` = n (I(M; Z) <= H(Z) <= n bits).

    Penalties: per fold, the one that gains most over the first ``selection_bits`` bits on the other folds; a bit
    whose decoder did not gain on the other folds claims 0 on this fold (:func:`noise_bit_gains`).
    ``null_bits``: the same procedure (penalty choice included) on ``num_permutations`` row-permutations of
    ``noise``. Cost: one batched fit of
    (1 + num_permutations) · selection_bits · num_folds · len(penalties) columns and one of
    (1 + num_permutations) · n · num_folds columns, each ``num_steps`` steps of two [N, W] x [W, columns] products.
    """
    masks = _checked_masks(masks)
    noise = np.asarray(noise)
    if noise.ndim != 2 or noise.shape[0] != masks.shape[0] or not np.isin(noise, (0, 1)).all():
        raise ConfigError(f"noise must be 0/1 of shape ({masks.shape[0]}, n) to match masks, got {noise.shape}")
    penalties = _checked_options(num_folds, num_permutations, confidence, penalties)
    if selection_bits < 1:
        raise ConfigError(f"selection_bits={selection_bits}: must be >= 1")
    fold_key, perm_key = jax.random.split(jax.random.key(0) if key is None else key)
    folds = _stratified_folds(np.zeros(masks.shape[0], np.int32), num_folds, fold_key)
    bits = jnp.asarray(noise, jnp.float32)
    bit_sets = jnp.concatenate([bits[None], bits[_permutations(perm_key, num_permutations, bits.shape[0])]])
    gains = noise_bit_gains(decoder_features(masks, ridge_only=not penalties[:, 0].any()), bit_sets, folds,
                            jnp.asarray(penalties),
                            selection_bits=min(selection_bits, noise.shape[1]), num_folds=num_folds,
                            num_steps=num_steps, learning_rate=learning_rate)
    return _gain_summary(gains, float(noise.shape[1]), confidence)


# ----------------------------------------------------------------------------------------------------------
# Conditioning on the initialization, and the effective parameter count.


def seed_confidence(confidence: float, num_seeds: int) -> float:
    """Per-seed level 1 - (1 - confidence) / S: S such intervals hold together with prob >= confidence."""
    return 1.0 - (1.0 - confidence) / num_seeds


def conditional(per_seed: list[MIResult]) -> MIResult:
    """I(M; D | W) = (1/S) Σ_s I(M; D | W = w_s) from one estimate per initialization w_s, in bits.

    ``bits``, ``lower``, ``upper`` and each ``null_bits[p]`` are means over seeds. If every per-seed interval
    was computed at level :func:`seed_confidence` (confidence, S), all S hold together with probability >=
    confidence (union bound), and on that event the means of their ends bracket the mean of the truths.
    """
    if not per_seed:
        raise ConfigError("conditional: needs at least one per-seed estimate")
    mean = lambda field: float(np.mean([getattr(r, field) for r in per_seed]))  # noqa: E731
    return MIResult(
        mean("bits"), mean("lower"), mean("upper"), np.mean([r.null_bits for r in per_seed], axis=0),
        "+".join(sorted({r.method for r in per_seed})),
    )


P_EFF_NOTE = ("p_eff = E||m||_0 + I(m; D): ||m||_0 counts every parameter the mask keeps (the kept prunable weights "
              "plus every parameter never pruned: biases, normalization), I in nats (bits * ln 2)")


def p_eff(nonzero_parameters: float, mi_bits: float | None) -> float:
    """No Free Prune's effective parameter count p_eff = E||m||_0 + I(m; D), the one definition every experiment
    uses (:data:`P_EFF_NOTE`): ``nonzero_parameters`` is E||m||_0 over every parameter of the masked network, biases
    and normalization parameters included (the theorem's p counts every parameter), and I is converted from
    ``mi_bits`` to nats, I_nats = bits · ln 2 (the paper's summary does not state the base; its law holds up to
    absolute constants, so the base only rescales I). ``mi_bits=None`` (MI not estimated) adds nothing."""
    return float(nonzero_parameters + (0.0 if mi_bits is None else mi_bits * np.log(2.0)))
