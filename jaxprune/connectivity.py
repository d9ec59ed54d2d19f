"""Connectivity of a masked network: which kept weights lie on an input→output path ("effective sparsity").

Vysogorets & Kempe ("Connectivity Matters", JMLR 2023, arXiv 2107.02306): a kept weight whose edge is on no
path from the input to the output cannot change the output; it is dead, and the layer's density overstates the
working network. The graph: its nodes are the units of Dense layers and the channels of Conv layers (with the
input's features / channels and the logits); every kept weight is an edge, a conv kernel [*taps, c_in, c_out]
connecting channel c_in to channel c_out when ANY of its taps is kept (channel-level, as in the paper). A kept
weight is effective iff its source is reachable from the input and its target reaches an output. A residual
sum joins two branches: when a block's conv branch is cut, its weights are dead but the shortcut (identity or
1x1 conv) still carries the signal, so the layers before and after the block stay effective. Channel-level
means a tap is counted with its channel pair even where, on a tiny feature map, it only ever meets padding.

How it is computed, for any Flax model, without knowing its graph (SynFlow's idea, in a saturating form).
Evaluate the network on an all-ones input with

- every prunable kernel replaced by its channel-level 0/1 mask W'[*taps, i, o] = 1[any tap of (i, o) kept],
- every ``bias`` zeroed (a bias is not a path from the input), BatchNorm replaced by x ↦ |γ| x (neutral
  statistics: mean 0, variance 1, shift 0, so no reachable channel is pushed below 0 by a mean subtraction;
  the running statistics ``apply_fn`` closes over are ignored),
- the output of every layer that owns a ``kernel`` passed through the indicator s(z) = 1[z > 0] whose
  derivative is DEFINED as ḡ ↦ 1[ḡ > 0] (a ``custom_vjp``),

and let R = Σ outputs. By induction over the layers, every value is non-negative and a unit's value is
positive exactly when it is reachable: Dense/Conv sums, ReLU, max and average pooling and residual sums of
non-negative numbers are positive iff one term is; a conv edge present on all taps reaches every position,
so a reachable channel is positive at every position. Backwards, the cotangent at a reachable unit is
positive (for a channel: at some position) exactly when the unit reaches an output, so
∂R/∂W'[*taps, i, o] summed over taps is positive iff i is reachable and o reaches the output. Without the
indicator this is SynFlow's ∂R/∂θ with R the number of paths (``pai._synflow``), whose positivity is the
same test in exact arithmetic; but a weight on one path and one on 2^150 paths must both come out positive
in float32, a dynamic range no global rescaling (``pai._synflow``'s power-of-two shift) provides in deep
nets (a 40-layer chain in tests/test_connectivity.py scores 0 there). The indicator keeps every number in
[0, fan-in · positions] at any depth, so the test is exact. Only the mask and |γ| matter, not the weights.

Requirements on ``apply_fn(params, x)``: it calls a Flax linen module (the interception works inside
``model.apply``; not a function jitted elsewhere), the units between kernels are ReLU / pooling / residual
sums / BatchNorm (true of every model in :mod:`jaxprune.models`); tanh-like or normalizing layers that turn
0 into a positive value are not covered. Every function here is for ONE network; lift with ``jax.vmap``.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks
from jaxprune.errors import ConfigError

PyTree = masks.PyTree
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]


@jax.custom_vjp
def _reached(z: jax.Array) -> jax.Array:
    """1[z > 0]; its derivative is defined as ḡ ↦ 1[ḡ > 0] (module docstring)."""
    return (z > 0).astype(z.dtype)


def _reached_fwd(z: jax.Array):
    return _reached(z), None


def _reached_bwd(_, g: jax.Array):
    return ((g > 0).astype(g.dtype),)


_reached.defvjp(_reached_fwd, _reached_bwd)


def _neutral_batch_norm(module: nn.BatchNorm, x: jax.Array) -> jax.Array:
    """x · |γ| broadcast over the module's feature axes: BatchNorm with mean 0, variance 1, shift 0 (ε dropped,
    a positive factor)."""
    if not module.use_scale:
        return x
    axes = {a % x.ndim for a in np.atleast_1d(module.axis)}
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    return x * jnp.abs(module.get_variable("params", "scale")).reshape(shape)


def _reachability_interceptor(kernel_layers: set):
    """Flax method interceptor: BatchNorm → :func:`_neutral_batch_norm`; every module owning a ``kernel``
    param gets :func:`_reached` on its output and its scope path recorded in ``kernel_layers``."""
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.BatchNorm):
            return _neutral_batch_norm(module, args[0])
        out = next_fun(*args, **kwargs)
        if module.has_variable("params", "kernel"):
            kernel_layers.add(module.scope.path)
            return _reached(out)
        return out

    return intercept


def _channel_mask(m: jax.Array) -> jax.Array:
    """1[any tap of (c_in, c_out) kept], broadcast back over the taps (leading axes); a Dense mask unchanged."""
    edges = jnp.any(m, axis=tuple(range(m.ndim - 2)), keepdims=True)
    return jnp.broadcast_to(edges, m.shape).astype(jnp.float32)


def _flow_params(params: PyTree, mask: PyTree) -> PyTree:
    """Kernels → :func:`_channel_mask` of their mask; ``bias`` leaves → 0; other leaves (BatchNorm γ) unchanged."""
    is_prunable = masks.kernels(params)  # every kernel is an edge of the graph; one not prunable is all kept

    def leaf(path, p, m, keep):
        if keep:
            return _channel_mask(m)
        return jnp.zeros_like(p) if masks.path_name(path).split("/")[-1] == "bias" else p

    return jax.tree_util.tree_map_with_path(leaf, params, mask, is_prunable)


def effective_mask(apply_fn: ApplyFn, params: PyTree, mask: PyTree, feature_shape: tuple[int, ...]) -> PyTree:
    """Bool mask like ``mask``: True at the kept prunable weights on an input→output path (module docstring),
    and on every non-prunable leaf (the :mod:`jaxprune.masks` convention). A subset of ``mask``.

    ``feature_shape``: one example's input shape (no batch axis). Only the mask matters: the values of the
    kernels in ``params`` are not used; BatchNorm's γ is (a channel with γ = 0 carries nothing).
    """
    flow = _flow_params(params, mask)
    kernel_layers: set = set()
    ones = jnp.ones((1, *feature_shape), jnp.float32)
    with nn.intercept_methods(_reachability_interceptor(kernel_layers)):
        grads = jax.grad(lambda f: jnp.sum(apply_fn(f, ones)))(flow)
    expected = sum(jax.tree.leaves(masks.kernels(params)))
    if len(kernel_layers) != expected:
        raise ConfigError(f"connectivity: apply_fn ran {len(kernel_layers)} Flax layers with a kernel, params have "
                          f"{expected}; pass an apply_fn that calls the Flax model (e.g. train.apply_fn_for)")

    def leaf(m, g, keep):
        if not keep:
            return m
        on_path = jnp.sum(g, axis=tuple(range(g.ndim - 2)), keepdims=True) > 0
        return m & on_path

    return jax.tree.map(leaf, mask, grads, masks.prunable(params))


def summary(mask: PyTree, effective: PyTree, params: PyTree) -> dict:
    """Nominal vs effective weight counts of ``mask`` and its :func:`effective_mask` (int/bool arrays; vmappable).

    ``{"layers": {name: {...}}, "total": {...}}``, layers keyed by '/'-joined path as ``masks.layer_density``.
    Per layer: ``size`` n_l, ``kept`` ||m_l||₀, ``effective`` (kept weights on an input→output path) and
    ``collapsed`` (effective = 0: the layer is empty or none of its weights is on a path). Total: ``size``,
    ``kept``, ``effective`` over all prunable weights, ``collapsed_layers`` (how many layers collapsed) and
    ``disconnected`` (no input→output path at all: the output does not depend on the input). Densities are
    added on the host by :func:`report`, exactly from these counts.
    """
    layers = {}
    for name, m, e in zip(masks.prunable_names(params), masks.prunable_leaves(mask, params),
                          masks.prunable_leaves(effective, params)):
        live = jnp.sum(e, dtype=jnp.int32)
        layers[name] = {"size": jnp.asarray(m.size, jnp.int32), "kept": jnp.sum(m, dtype=jnp.int32),
                        "effective": live, "collapsed": live == 0}
    total = {key: sum(v[key] for v in layers.values()) for key in ("size", "kept", "effective")}
    total |= {"collapsed_layers": sum(v["collapsed"].astype(jnp.int32) for v in layers.values()),
              "disconnected": total["effective"] == 0}
    return {"layers": layers, "total": total}


def diagnose(apply_fn: ApplyFn, params: PyTree, mask: PyTree, feature_shape: tuple[int, ...]) -> dict:
    """:func:`summary` of ``mask`` and its :func:`effective_mask`: one network, arrays, vmappable."""
    return summary(mask, effective_mask(apply_fn, params, mask, feature_shape), params)


def _with_densities(counts: dict) -> dict:
    """``counts`` (host arrays) as Python values, plus ``nominal_density`` = kept / size and
    ``effective_density`` = effective / size in float64."""
    size = np.asarray(counts["size"], np.float64)
    out = {k: np.asarray(v).tolist() for k, v in counts.items()}
    return out | {"nominal_density": (np.asarray(counts["kept"]) / size).tolist(),
                  "effective_density": (np.asarray(counts["effective"]) / size).tolist()}


def report(diagnostics: dict) -> dict:
    """:func:`summary` / :func:`diagnose` output (optionally with leading seed or sparsity axes from vmap) as
    JSON-able Python values (ints, floats, bools, or nested lists of them along the leading axes), with
    ``nominal_density`` and ``effective_density`` added to every layer and to the total."""
    return {"layers": {name: _with_densities(c) for name, c in diagnostics["layers"].items()},
            "total": _with_densities(diagnostics["total"])}
