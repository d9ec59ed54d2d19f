"""Node-Path Balancing (NPB; Pham et al., NeurIPS 2023, "Towards data-agnostic pruning at initialization: what
makes a good sparse mask?"): a mask chosen layer by layer to balance effective nodes against effective paths.

Semantics of the reference (github.com/pvh1602/NPB, ``Pruners/utils.py:optimize_layerwise`` as
``Pruners/pruners.py:NPB.prune`` calls it for Dense layers, with ``main.py``'s defaults: ``init_mode='ERK'``,
``alpha=0.99``; Dense layers get ``beta=0``). Layers are solved in order l = 1..L. Layer l, a kernel
M ∈ {0,1}^{C_in × C_out} with a budget of n = ⌈d_l · C_in · C_out⌉ kept weights (d_l the layer's ERK
density), maximizes

    α · (Σ_i min(1, Σ_j M_ij) + Σ_j min(1, Σ_i M_ij)) / (C_in + C_out)      effective nodes (with ≥ 1 edge)
    + (1 − α) · Σ_ij P_i M_ij / P_max                                        paths through the layer

subject to Σ_ij M_ij ≤ n, where P_i is the value of input unit i when the network, its kernels replaced by
the masks already chosen (dense after layer l), every other parameter (the biases) set to 1 and its input to
all ones, runs in float64: the number of input→unit paths, plus the biases' contributions as in the reference.
P_max normalizes the path term: the reference's bound, Σ of the ⌊n / C_out⌋ largest P_i times C_out plus the
remainder times the next P_i (with Python's ``a[-0:]`` meaning the whole array when ⌊n / C_out⌋ = 0, kept).
A layer with C_in · C_out > 5120 is solved in chunks of 10 output units, each with the layer's density (the
reference's chunking; its last C_out mod 10 units, left dense there, are one more chunk here).

The problem is a mixed-integer linear program once min(1, s) is written as u ≤ s, u ≤ 1 (maximized, u equals
it at the optimum); :func:`solve_layer` hands it to HiGHS through ``scipy.optimize.milp`` (the reference
uses cvxpy). The reference's conv branch (kernel taps per channel pair, ``max_p``) is not implemented here:
NPB runs on chains of Dense layers (``mlp``, ``lenet300_100``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, sparse

from jaxprune.errors import ConfigError

CHUNK_ABOVE = 512 * 10  # the reference solves a Dense layer with more weights than this in chunks ...
CHUNK_UNITS = 10  # ... of this many output units


def path_normalizer(p_in: np.ndarray, c_out: int, budget: int) -> float:
    """The reference's P_max: the path term's value if the budget filled the ⌊n / C_out⌋ inputs of largest P
    completely and the rest went to the next one (see module docstring for the ⌊n / C_out⌋ = 0 case)."""
    order = np.sort(p_in)
    full, rest = budget // c_out, budget - (budget // c_out) * c_out
    top = order[-full:] if full > 0 else order  # the reference's order[-0:] is the whole array
    bound = float(np.sum(top) * c_out)
    if full + 1 <= len(order):
        bound += rest * float(order[-(full + 1)])
    return bound


def objective(mask: np.ndarray, p_in: np.ndarray, budget: int, alpha: float) -> float:
    """NPB's objective (module docstring) of a 0/1 kernel ``mask`` [C_in, C_out]."""
    mask = np.asarray(mask, np.float64)
    c_in, c_out = mask.shape
    nodes = np.minimum(1, mask.sum(1)).sum() + np.minimum(1, mask.sum(0)).sum()
    paths = float(p_in @ mask.sum(1))
    return alpha * nodes / (c_in + c_out) + (1 - alpha) * paths / path_normalizer(p_in, c_out, budget)


def solve_layer(p_in: np.ndarray, c_out: int, budget: int, alpha: float) -> np.ndarray:
    """The 0/1 kernel [C_in, C_out] maximizing :func:`objective` with at most ``budget`` ones (HiGHS MILP).

    Variables: M (row-major), u_i (input node i effective), v_j (output node j effective), all in [0, 1],
    M integer; u_i ≤ Σ_j M_ij, v_j ≤ Σ_i M_ij, Σ M ≤ budget. ConfigError if HiGHS finds no solution.
    """
    c_in = len(p_in)
    n_m = c_in * c_out
    nodes = alpha / (c_in + c_out)
    paths = (1 - alpha) / path_normalizer(p_in, c_out, budget)
    cost = -np.concatenate([paths * np.repeat(p_in, c_out), np.full(c_in + c_out, nodes)])  # milp minimizes
    rows = sparse.kron(sparse.eye(c_in), np.ones((1, c_out)))  # Σ_j M_ij
    cols = sparse.kron(np.ones((1, c_in)), sparse.eye(c_out))  # Σ_i M_ij
    node_rows = sparse.hstack([-rows, sparse.eye(c_in), sparse.csr_matrix((c_in, c_out))])
    node_cols = sparse.hstack([-cols, sparse.csr_matrix((c_out, c_in)), sparse.eye(c_out)])
    total = sparse.hstack([np.ones((1, n_m)), sparse.csr_matrix((1, c_in + c_out))])
    constraints = [optimize.LinearConstraint(sparse.vstack([node_rows, node_cols]).tocsr(), -np.inf, 0.0),
                   optimize.LinearConstraint(total.tocsr(), -np.inf, budget)]
    integrality = np.concatenate([np.ones(n_m), np.zeros(c_in + c_out)])
    result = optimize.milp(cost, constraints=constraints, integrality=integrality, bounds=optimize.Bounds(0, 1))
    if result.x is None:
        raise ConfigError(f"npb: HiGHS found no mask for a {c_in}x{c_out} layer with {budget} weights "
                          f"({result.message})")
    return np.round(result.x[:n_m]).reshape(c_in, c_out).astype(np.float32)


def solve_kernel(p_in: np.ndarray, c_out: int, density: float, alpha: float) -> np.ndarray:
    """One layer's 0/1 kernel [C_in, C_out] at ``density``, in the reference's chunks of output units. Chunks of
    one width are the same problem (same P, width and budget), so it is solved once: HiGHS is deterministic,
    and solving it again, as the reference does, returns the same chunk."""
    c_in = len(p_in)
    width = CHUNK_UNITS if c_in * c_out > CHUNK_ABOVE else c_out
    chunks = [min(width, c_out - start) for start in range(0, c_out, width)]
    solved = {c: solve_layer(p_in, c, math.ceil(density * c_in * c), alpha) for c in set(chunks)}
    return np.concatenate([solved[c] for c in chunks], axis=1)


def check_chain(shapes: list[tuple[int, ...]], feature_size: int) -> None:
    """ConfigError unless the kernels form a chain of Dense layers fed by the ``feature_size`` input features."""
    fan_ins = [feature_size] + [s[-1] for s in shapes[:-1]]
    if any(len(s) != 2 for s in shapes) or [s[0] for s in shapes] != fan_ins:
        raise ConfigError(f"npb: implemented for a chain of Dense layers with every kernel prunable (mlp, "
                          f"lenet300_100); got prunable kernels of shapes {shapes} on {feature_size} input features")


def masks_for(shapes: list[tuple[int, int]], densities: np.ndarray, alpha: float) -> list[np.ndarray]:
    """NPB's 0/1 kernels, layer by layer (module docstring); ``densities`` d_l per layer."""
    p_in, out = np.ones(shapes[0][0]), []
    for (_, c_out), d in zip(shapes, densities):
        out.append(solve_kernel(p_in, c_out, float(d), alpha))
        p_in = np.maximum(p_in @ out[-1].astype(np.float64) + 1.0, 0.0)  # biases 1, ReLU, as the reference
    return out
