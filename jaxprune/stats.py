"""Agreement statistics between score vectors (survival counts, predicted scores)."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def _moments(a: jax.Array, b: jax.Array) -> tuple[jax.Array, ...]:
    """Population (mean_a, mean_b, var_a, var_b, cov) of two vectors, in float32 (centred sums)."""
    a, b = jnp.ravel(a).astype(jnp.float32), jnp.ravel(b).astype(jnp.float32)
    mean_a, mean_b = jnp.mean(a), jnp.mean(b)
    da, db = a - mean_a, b - mean_b
    return mean_a, mean_b, jnp.mean(da * da), jnp.mean(db * db), jnp.mean(da * db)


def ccc(a: jax.Array, b: jax.Array) -> jax.Array:
    """Lin's (1989) concordance correlation 2 cov(a, b) / (var a + var b + (mean a - mean b)²), population moments.

    1 iff a = b; equals Pearson's r when the means and variances agree; NaN when both are the same constant.
    """
    mean_a, mean_b, var_a, var_b, cov = _moments(a, b)
    return 2 * cov / (var_a + var_b + (mean_a - mean_b) ** 2)


def average_ranks(a: jax.Array) -> jax.Array:
    """1-based ranks of the entries of a (flattened); tied entries share the mean of their ranks."""
    a = jnp.ravel(a)
    ordered = jnp.sort(a)
    below = jnp.searchsorted(ordered, a, side="left")
    at_or_below = jnp.searchsorted(ordered, a, side="right")
    return (below + at_or_below + 1) / 2


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman's ρ: Pearson's r = cov / sqrt(var var) of the average ranks of a and b."""
    _, _, var_a, var_b, cov = _moments(average_ranks(a), average_ranks(b))
    return cov / jnp.sqrt(var_a * var_b)


def mean_pairwise_ccc(rows) -> float:
    """Mean of ``ccc(rows[i], rows[j])`` over all pairs i < j (NaN for fewer than two rows)."""
    rows = np.asarray(rows)
    pairs = list(itertools.combinations(range(len(rows)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean([float(ccc(rows[i], rows[j])) for i, j in pairs]))
