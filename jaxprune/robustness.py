"""No Free Prune's robustness check: empirical Lipschitz constants against the Law-of-Robustness scale.

Law of Robustness (Bubeck & Sellke 2021) with No Free Prune's effective parameter count (Kumar, Luo, Sellke
2024): a network that fits n noisy points in d dimensions (inputs c/d-isoperimetric, e.g. x ~ N(0, I/d) as in
:mod:`jaxprune.data.gaussian`) below the noise level σ has, up to constants and log factors,

    Lip(f) ≳ σ · sqrt(n · d / p_eff),    p_eff = E‖m‖₀ + I(m; D),

‖m‖₀ the network's parameters left by its mask m (biases and other unpruned parameters included) and I(m; D)
the mutual information between mask and data. :func:`robustness_scale` is the right-hand side *without its
constant*, a scale to compare measured Lipschitz constants against, not a numeric lower bound.

Two measurements of the Lipschitz constant (ℓ2 → ℓ2) of one trained network f: R^d → R^K (the logits, or the
regression output):

- :func:`input_jacobian_norms`: ‖J_f(x_i)‖₂ (largest singular value of the input Jacobian; the gradient norm
  when K = 1) at data points. For differentiable f, Lip(f) = sup_x ‖J_f(x)‖₂, so the max over the data is a
  LOWER estimate of Lip(f) (exact for a linear map).
- :func:`spectral_norm_product`: Π_l ‖W_l‖₂ over the Dense kernels, an UPPER bound for an MLP
  f = W_L σ(… σ(W_1 x + b_1) …) + b_L with 1-Lipschitz σ (ReLU): J_f(x) = W_Lᵀ D_{L−1} … D_1 W_1ᵀ with
  diagonal 0/1 matrices D_l, so ‖J_f(x)‖₂ ≤ Π ‖W_l‖₂.

The MI term is estimated by :mod:`jaxprune.mi` from mask ensembles over dataset draws; experiments that do not
estimate it pass ``mi_bits=None`` and report ``p_eff_mi_term: null`` ("MI term not estimated"), i.e. p_eff is
the density term alone. Every function is for one network; lift with ``jax.vmap``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks, mi
from jaxprune.errors import ConfigError

PyTree = Any
MI_NOT_ESTIMATED = "MI term not estimated: p_eff is the density term E||m||_0 alone"


SQUARINGS = 10  # spectral_norm: G^(2^10) = G^1024 isolates the top eigenvector of the Gram matrix G


def spectral_norm(matrix: jax.Array) -> jax.Array:
    """‖A‖₂, the largest singular value of a K × d matrix, without a LAPACK call (which can stall XLA:CPU's thread
    pool when several devices run one at once; see docs/scale_out.md).

    With G = A Aᵀ (or AᵀA, whichever is smaller), G^(2^t) = Σ_i λ_i^(2^t) u_i u_iᵀ is dominated by the top
    eigenvector u_1 after t = :data:`SQUARINGS` repeated squarings (each rescaled by its trace, so nothing
    overflows); its largest column v points along u_1, and the Rayleigh quotient vᵀGv / vᵀv = σ² ≤ σ_max² is
    returned as σ. So the value never exceeds ‖A‖₂ (the max over data points stays a lower estimate of Lip(f)) and
    equals it to float32 precision unless λ_2/λ_1 is within ~1e-3 of 1, where the gap itself is then that small.
    """
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix

    def square(power, _):
        power = power @ power
        return power / jnp.maximum(jnp.trace(power), jnp.finfo(power.dtype).tiny), None

    power, _ = jax.lax.scan(square, gram / jnp.maximum(jnp.trace(gram), jnp.finfo(gram.dtype).tiny), None,
                            length=SQUARINGS)
    v = power[:, jnp.argmax(jnp.diagonal(power))]
    quotient = (v @ gram @ v) / jnp.maximum(v @ v, jnp.finfo(v.dtype).tiny)
    return jnp.sqrt(jnp.maximum(quotient, 0.0))


def input_jacobian_norms(apply_fn: Callable, params: PyTree, x: jax.Array, chunk: int = 256) -> jax.Array:
    """‖∂f(x_i)/∂x_i‖₂ (spectral norm of the K × d input Jacobian, :func:`spectral_norm`) for every row x_i of
    ``x`` [N, ...].

    ``apply_fn(params, x_batch) -> [B, K]``; rows are processed ``chunk`` at a time (``lax.map``).
    """
    def one(xi):
        jac = jax.jacrev(lambda v: apply_fn(params, v[None])[0])(xi)
        return spectral_norm(jac.reshape(jac.shape[0], -1))

    return jax.lax.map(one, x, batch_size=min(chunk, x.shape[0]))


def spectral_norm_product(params: PyTree) -> float:
    """Π_l ‖W_l‖₂ over the prunable (Dense) kernels: an upper bound on Lip(f) for a ReLU MLP (module docstring).

    Pass one network's (masked) trained parameters. Computed on the host in float64 with LAPACK (exact up to
    rounding, so the bound stays a bound; XLA's batched CPU SVD is ~100x slower). Raises ConfigError for kernels
    that are not 2-D (convolutions: the operator norm of a convolution is not the norm of its kernel tensor).
    """
    kernels = masks.prunable_leaves(params, params)
    if any(np.ndim(w) != 2 for w in kernels):
        raise ConfigError("spectral_norm_product: defined for MLPs (2-D Dense kernels) only, not convolutions")
    return float(np.prod([np.linalg.norm(np.asarray(w, np.float64), ord=2) for w in kernels]))


def nonzero_parameters(mask: PyTree) -> jax.Array:
    """‖m‖₀ over every parameter: kept prunable weights plus all unpruned leaves (biases, normalization)."""
    return sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(mask))


def random_label_std(num_classes: int) -> float:
    """σ of uniformly random labels as one-hot vectors: E‖e_y − E e_y‖² = Σ_k (1/K)(1 − 1/K) = 1 − 1/K."""
    return float(np.sqrt(1.0 - 1.0 / num_classes))


def robustness_scale(sigma: float, num_examples: int, input_dim: int, p_eff: float) -> float:
    """σ · sqrt(n · d / p_eff): the Law-of-Robustness scale of Lip(f), without its constant."""
    return float(sigma * np.sqrt(num_examples * input_dim / p_eff))


BELOW_NOISE_NOTE = ("robustness_scale is given only where every seed fits below the noise level (epsilon > 0); "
                    "the law of robustness says nothing about a fit at or above it")
SCALE_NOTE = "sigma * sqrt(n * d / p_eff) without its constant and log factors; p_eff as jaxprune.mi.p_eff"


def summary(nonzero_counts, lipschitz_lower, lipschitz_upper, *, sigma: float, num_examples: int,
            input_dim: int, mi_bits: float | None = None, fit_sq_error=None) -> dict:
    """JSON-able robustness record of one (method, sparsity) over seeds.

    ``nonzero_counts`` [seeds]: ‖m‖₀ of each seed's mask; ``lipschitz_lower`` [seeds]: max input-Jacobian
    norm over the training set; ``lipschitz_upper`` [seeds] or None (not an MLP). p_eff = :func:`jaxprune.mi.p_eff`
    (mean ‖m‖₀, ``mi_bits`` in nats).
    ``fit_sq_error`` [seeds], if given: the fit's mean squared error (1/n) Σ‖f(x_i) − y_i‖²; the law of robustness
    concerns fits below the noise level, ε = σ² − that error > 0, so ``noise_level_gap`` ε is reported per seed
    and ``robustness_scale`` is None unless ε > 0 for every seed (``robustness_note`` says so).
    """
    density_term = float(np.mean(nonzero_counts))
    p_eff = mi.p_eff(density_term, mi_bits)
    scale = robustness_scale(sigma, num_examples, input_dim, p_eff)
    out = {
        "p_eff": p_eff,
        "p_eff_density_term": density_term,
        "p_eff_mi_term": mi_bits,
        "p_eff_note": MI_NOT_ESTIMATED if mi_bits is None else mi.P_EFF_NOTE,
        "robustness_scale": scale,
        "robustness_scale_note": SCALE_NOTE,
        "lipschitz_input_gradient": np.asarray(lipschitz_lower, np.float64),
        "lipschitz_spectral_bound": None if lipschitz_upper is None else np.asarray(lipschitz_upper, np.float64),
    }
    if fit_sq_error is None:
        return out
    gap = sigma**2 - np.asarray(fit_sq_error, np.float64)
    below = bool(np.all(gap > 0))
    return out | {"noise_level_gap": gap, "robustness_scale": scale if below else None,
                  "robustness_note": None if below else BELOW_NOISE_NOTE}
