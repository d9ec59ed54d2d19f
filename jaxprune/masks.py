"""Sparsity masks as pytrees shaped like the parameters they gate.

A mask is a pytree of boolean arrays with exactly the structure and shapes of ``params``. Leaves that are
not prunable (biases, normalization parameters) are all-True, so ``apply(params, mask)`` is a plain
``tree_map`` with no special cases. Which leaves are prunable is decided by :func:`prunable`: the
``kernel`` of Dense and Conv layers (Flax names both ``kernel``), as in Synaptic-Flow and OpenLTH, or those of
them whose path matches the pattern given to :func:`select` (``config.prunable``).

Every function here is pure and written for one network (one seed); lift it with ``jax.vmap``.

Masks from scores
-----------------
Given scores s (a pytree like params) and a target density d = 1 - sparsity, the ``global`` scope keeps the
k = round(d * n) prunable weights with the largest scores, n the number of prunable weights in the whole
network; ``layerwise`` keeps round(d_l * n_l) in each layer l with per-layer densities d_l from an
*allocation*: ``uniform`` (d_l = d) or ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020: d_l ∝ Σ dims / Π dims,
scaled so the total kept count is d * n, layers that would exceed density 1 are capped and the rest rescaled).

Ties are broken deterministically: among equal scores the weight with the smaller flat index (in the
order of ``jax.tree.leaves`` then row-major) is kept first. NaN scores rank below every number, so a
NaN weight is pruned before any finite one. :func:`restrict` scores already-pruned weights ``-inf``, so a
mask built from restricted scores at no more than the alive count is a subset of the previous mask.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.errors import ConfigError

PyTree = Any
Scope = Literal["global", "layerwise"]
Allocation = Literal["uniform", "erk"]
SCOPES = ("global", "layerwise")
ALLOCATIONS = ("uniform", "erk")


def path_name(path) -> str:
    """'/'-joined name of a pytree path, e.g. ``Dense_0/kernel``."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


_selected: re.Pattern | None = None  # prunable kernels: those whose path this matches (None: every kernel)


def select(pattern: str) -> None:
    """Make only the kernels whose '/'-joined path matches the regular expression ``pattern`` (``re.search``)
    prunable, e.g. ``'Dense_1|Dense_2'``; ``''`` restores the default, every Dense/Conv kernel. The other kernels
    are kept dense by every method and left out of every density count. (A setting of the process, like a
    config's: :func:`jaxprune.experiments.common.setup` applies ``config.prunable`` before any mask is made.)"""
    global _selected
    try:
        _selected = re.compile(pattern) if pattern else None
    except re.error as e:
        raise ConfigError(f"config.prunable={pattern!r}: not a regular expression ({e})") from None


def kernels(params: PyTree) -> PyTree:
    """Pytree of Python bools like ``params``: True for every Dense/Conv kernel (leaf named ``kernel``,
    ndim >= 2), prunable or not: the weights that connect units."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: path_name(path).split("/")[-1] == "kernel" and len(getattr(p, "shape", np.shape(p))) >= 2,
        params)


def prunable(params: PyTree) -> PyTree:
    """Pytree of Python bools like ``params``: True for the prunable leaves, the :func:`kernels` whose path the
    :func:`select` ed pattern matches (by default every kernel)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, k: k and (_selected is None or _selected.search(path_name(path)) is not None), kernels(params))


def prunable_names(params: PyTree) -> list[str]:
    """'/'-joined paths of the prunable leaves, in ``jax.tree.leaves`` order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    is_prunable = jax.tree.leaves(prunable(params))
    return [path_name(path) for (path, _), keep in zip(flat, is_prunable) if keep]


def prunable_leaves(tree: PyTree, params: PyTree) -> list[jax.Array]:
    """The leaves of ``tree`` (shaped like ``params``) that sit at prunable positions, in leaf order."""
    return [x for x, keep in zip(jax.tree.leaves(tree), jax.tree.leaves(prunable(params))) if keep]


def ones(params: PyTree) -> PyTree:
    """The dense mask: all True."""
    return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)


def apply(params: PyTree, mask: PyTree) -> PyTree:
    """``params ⊙ mask``. Uses ``where`` so a masked weight is exactly 0 even if its value is inf/NaN."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def count(mask: PyTree, params: PyTree) -> tuple[jax.Array, int]:
    """(number of kept prunable weights, number of prunable weights)."""
    leaves = prunable_leaves(mask, params)
    total = sum(int(np.prod(m.shape)) for m in leaves)
    kept = sum(jnp.sum(m, dtype=jnp.int32) for m in leaves)
    return kept, total


def density(mask: PyTree, params: PyTree) -> jax.Array:
    """Fraction of prunable weights kept (||m||_0 / n over prunable leaves)."""
    kept, total = count(mask, params)
    return kept / total


def layer_density(mask: PyTree, params: PyTree) -> dict[str, jax.Array]:
    """Per prunable layer: fraction of its weights kept, keyed by '/'-joined path."""
    return {name: jnp.mean(m) for name, m in zip(prunable_names(params), prunable_leaves(mask, params))}


def restrict(scores: PyTree, mask: PyTree) -> PyTree:
    """Scores with already-pruned weights set to -inf, so a new mask is a subset of ``mask``."""
    return jax.tree.map(lambda s, m: jnp.where(m, s, -jnp.inf), scores, mask)


def _top_k_mask(flat_scores: jax.Array, k: jax.Array) -> jax.Array:
    """Bool vector keeping the k largest entries; ties to the smaller index; NaN lowest; −0, +0 and subnormals
    equal (XLA flushes subnormals on CPU, as its sort did). k may be traced.

    The same mask as ranking a stable descending sort, without a sort or a scatter (both slow on CPU: seconds for
    250 seeds × 46k weights, at every SynFlow round): t = the k-th largest score is found exactly by deciding its
    32 bits one by one, each from a count (:func:`_kth_largest_key`); the entries > t are kept, and of those = t,
    the first k − #{> t} in index order (a cumulative sum)."""
    key = _order_key(flat_scores)
    threshold = _kth_largest_key(key, k)
    above = key > threshold
    tied = key == threshold
    return above | (tied & (jnp.cumsum(tied, dtype=jnp.int32) <= k - jnp.sum(above, dtype=jnp.int32)))


def _order_key(flat_scores: jax.Array) -> jax.Array:
    """uint32 keys in the order of the float32 scores (NaN as −inf, −0 as +0): u < v ⇔ score u < score v. A
    float's bits as a signed integer are ordered for x ≥ 0 and reversed for x < 0; flipping the 31 low bits of the
    negatives and then the sign bit of all gives one unsigned order."""
    s = jnp.where(jnp.isnan(flat_scores), -jnp.inf, flat_scores).astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(jnp.where(s == 0, jnp.float32(0), s), jnp.int32)
    signed = jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)
    return jax.lax.bitcast_convert_type(signed, jnp.uint32) ^ jnp.uint32(0x80000000)


def _kth_largest_key(key: jax.Array, k) -> jax.Array:
    """The largest t with #{i: key_i ≥ t} ≥ k, i.e. the k-th largest key for 1 ≤ k ≤ n (the maximal uint32 for
    k ≤ 0, the minimum key for k ≥ n), built from the top bit down: a bit is set when the keys at or above the
    prefix with it set still number at least k."""
    def decide(bit, t):
        candidate = t | (jnp.uint32(1) << (31 - bit).astype(jnp.uint32))
        return jnp.where(jnp.sum(key >= candidate, dtype=jnp.int32) >= k, candidate, t)

    return jax.lax.fori_loop(0, 32, decide, jnp.uint32(0))


def keep_count(keep_density, n: int):
    """k = round(keep_density · n), half to even. A Python number is rounded exactly as written (float64);
    a traced density is rounded in float32, where e.g. 1 − 0.9 = 0.10000002."""
    if isinstance(keep_density, (int, float)):
        return round(keep_density * n)
    return jnp.round(keep_density * n).astype(jnp.int32)


def layer_densities(params: PyTree, density_target, allocation: Allocation | Any = "uniform") -> list:
    """Per prunable layer densities d_l with Σ d_l n_l = density_target · n (see module docstring).

    ``allocation`` may also be per-layer weights w_l [L] (prunable leaf order, may be traced): d_l = c · w_l with
    the one factor c that meets the total, layers that would exceed density 1 capped and the rest rescaled, as
    for ERK (whose weights are Σ dims / Π dims).
    """
    shapes = [np.shape(p) for p in prunable_leaves(params, params)]
    sizes = np.array([np.prod(s) for s in shapes], dtype=np.float64)
    if isinstance(allocation, str) and allocation == "uniform":
        return [density_target for _ in shapes]
    d = jnp.asarray(density_target, jnp.float32)
    if isinstance(allocation, str) and allocation != "erk":
        raise ConfigError(f"allocation={allocation!r}: must be one of {', '.join(ALLOCATIONS)} or per-layer weights")
    if isinstance(allocation, str):
        raw = np.array([np.sum(s) / np.prod(s) for s in shapes], dtype=np.float64)
    else:
        raw = jnp.asarray(allocation, jnp.float32)
        if raw.shape != (len(shapes),):
            raise ConfigError(f"allocation weights of shape {raw.shape}: need one per prunable layer ({len(shapes)})")
    # Iteratively cap layers at density 1 and redistribute the remaining budget over the others.
    # The number of passes is bounded by the number of layers; written with jnp so the target may be traced.
    dense = jnp.zeros(len(shapes), bool)
    for _ in range(len(shapes)):
        budget = d * sizes.sum() - jnp.sum(jnp.where(dense, sizes, 0.0))
        eps = budget / jnp.sum(jnp.where(dense, 0.0, raw * sizes))
        dl = jnp.where(dense, 1.0, eps * raw)
        dense = dense | (dl > 1.0)
    dl = jnp.clip(dl, 0.0, 1.0)
    return [dl[i] for i in range(len(shapes))]


def from_scores(
    scores: PyTree,
    params: PyTree,
    sparsity,
    scope: Scope = "global",
    allocation: Allocation | Any = "uniform",
) -> PyTree:
    """Mask keeping the highest-scoring prunable weights at the given sparsity (fraction removed).

    ``global``: k = round((1 - sparsity) · n) over all prunable weights together.
    ``layerwise``: k_l = round(d_l · n_l) per layer, d_l from ``allocation`` (uniform, ERK, or per-layer weights:
    :func:`layer_densities`).
    Non-prunable leaves are all-True. ``sparsity`` may be a traced scalar (vmap over sparsities works).
    """
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope!r}: must be one of {', '.join(SCOPES)}")
    keep_density = 1.0 - sparsity if isinstance(sparsity, (int, float)) else 1.0 - jnp.asarray(sparsity, jnp.float32)
    leaves, treedef = jax.tree.flatten(scores)
    is_prunable = jax.tree.leaves(prunable(params))
    idx = [i for i, keep in enumerate(is_prunable) if keep]
    out = [jnp.ones(jnp.shape(x), bool) for x in leaves]
    if scope == "global":
        flat = jnp.concatenate([jnp.ravel(leaves[i]).astype(jnp.float32) for i in idx])
        keep = _top_k_mask(flat, keep_count(keep_density, flat.size))
        offset = 0
        for i in idx:
            n = int(np.prod(jnp.shape(leaves[i])))
            out[i] = keep[offset:offset + n].reshape(jnp.shape(leaves[i]))
            offset += n
    else:
        for i, d_l in zip(idx, layer_densities(params, keep_density, allocation)):
            flat = jnp.ravel(leaves[i]).astype(jnp.float32)
            out[i] = _top_k_mask(flat, keep_count(d_l, flat.size)).reshape(jnp.shape(leaves[i]))
    return jax.tree.unflatten(treedef, out)


def largest_magnitude(params: PyTree, sparsity, scope: Scope = "global", within: PyTree = None) -> PyTree:
    """Magnitude pruning: keep the largest-|θ| prunable weights, ``sparsity`` of all prunable weights removed
    (:func:`from_scores` of |θ|); with ``within``, only its survivors compete, so the result is a subset of it."""
    scores = jax.tree.map(jnp.abs, params)
    return from_scores(scores if within is None else restrict(scores, within), params, sparsity, scope)


def shuffle_within_layers(mask: PyTree, params: PyTree, key: jax.Array) -> PyTree:
    """Sanity ablation (Frankle et al. 2021): randomly permute each prunable layer's mask entries.

    Keeps every layer's density, destroys which weights were chosen.
    """
    leaves, treedef = jax.tree.flatten(mask)
    is_prunable = jax.tree.leaves(prunable(params))
    keys = jax.random.split(key, len(leaves))
    out = [
        jax.random.permutation(k, jnp.ravel(m)).reshape(m.shape) if p else m
        for m, p, k in zip(leaves, is_prunable, keys)
    ]
    return jax.tree.unflatten(treedef, out)
