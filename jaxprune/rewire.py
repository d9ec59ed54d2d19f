"""Degree-preserving rewiring of a mask: every unit keeps its exact in- and out-degree; which edges it has is random.

A Dense kernel's mask m [n_in, n_out] is a bipartite graph: input unit i → output unit j is an edge iff m[i, j].
Its degrees are the row sums r_i (out-degree of input unit i) and the column sums c_j (in-degree of output unit j).
Rewiring draws a mask uniformly from M(r, c), the 0/1 matrices with these margins, by a chain of double-edge swaps
(Ryser's interchanges; Milo et al. 2003, "On the uniform generation of random graphs with prescribed degree
sequences"):

    pick two edges (a, b), (c, d) uniformly and independently from the current edge list; if a ≠ c, b ≠ d and
    neither (a, d) nor (c, b) is an edge, replace the two by (a, d) and (c, b); otherwise stay.

The proposal is symmetric (the reverse swap picks (a, d), (c, b), again with probability 1/E²), so the uniform
distribution on M(r, c) is stationary; any two matrices of M(r, c) are joined by such interchanges (Ryser 1957), so
the chain is irreducible, and staying put on a rejected swap makes it aperiodic: its law converges to the uniform
distribution on M(r, c). A layer more than half full is rewired through its complement (margins n_out − r_i and
n_in − c_j; complementing maps M(r, c) one-to-one onto the complement's set, uniform onto uniform), so the chain
always moves the rarer of kept and pruned entries and stays efficient in nearly full layers.

Length: the chain attempts ``swaps_per_edge`` · E swaps, E the edges of the graph it rewires. **Mixing diagnostic**:
``overlap``, the fraction of the starting edges still in place after each of :data:`CHECKPOINTS` equal segments of the
chain. It starts at 1 and decays to a plateau, the stationary expectation E_unif |X ∩ m₀| / E (computed exactly by
enumeration in tests/test_rewire.py); a chain whose last checkpoints still fall has not forgotten its start.
``accepted``: swaps made per edge.

Only 2-D kernels (Dense) have unit degrees here; a conv kernel [*taps, c_in, c_out] is refused (ConfigError).
Every function is for ONE network (one seed); lift with ``jax.vmap``, the chain lengths shared by the seeds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks
from jaxprune.errors import ConfigError

CHECKPOINTS = 8  # equal segments of the chain after which the overlap with the start is recorded


def worked_edges(m: jax.Array) -> jax.Array:
    """The number of edges the chain moves in a 2-D mask: its kept entries, or its pruned ones if more than half are
    kept (the complement is rewired then)."""
    kept = jnp.sum(m, dtype=jnp.int32)
    return jnp.minimum(kept, m.size - kept)


def _swap_chain(m: jax.Array, key: jax.Array, num_steps: jax.Array, checkpoints: int) -> tuple[jax.Array, dict]:
    """``m`` [R, C] bool after ``checkpoints`` · ⌈num_steps / checkpoints⌉ attempted double-edge swaps (module
    docstring); step t draws its two edges with ``fold_in(key, t)``. Edge k keeps its row; a swap exchanges the
    columns of edges i and j."""
    num_cols = m.shape[1]
    flat = jnp.nonzero(jnp.ravel(m), size=m.size, fill_value=0)[0]
    rows, cols0 = flat // num_cols, flat % num_cols
    edges = jnp.sum(m, dtype=jnp.int32)
    per_segment = (num_steps + checkpoints - 1) // checkpoints

    def step(t, carry):
        m, cols, accepted = carry
        i, j = jax.random.randint(jax.random.fold_in(key, t), (2,), 0, jnp.maximum(edges, 1))
        a, b, c, d = rows[i], cols[i], rows[j], cols[j]
        ad, cb = m[a, d], m[c, b]
        valid = (a != c) & (b != d) & ~ad & ~cb
        # (a, b), (c, d), (a, d), (c, b) are distinct when valid; when not, every write repeats the current value.
        m = m.at[jnp.stack([a, c, a, c]), jnp.stack([b, d, d, b])].set(jnp.stack([~valid, ~valid, valid | ad,
                                                                                   valid | cb]))
        cols = cols.at[jnp.stack([i, j])].set(jnp.where(valid, jnp.stack([d, b]), jnp.stack([b, d])))
        return m, cols, accepted + valid.astype(jnp.int32)

    def segment(s, carry):
        state, overlap = carry
        state = jax.lax.fori_loop(s * per_segment, (s + 1) * per_segment, step, state)
        kept = jnp.where(edges > 0, jnp.sum(state[0] & m) / jnp.maximum(edges, 1), 1.0)
        return state, overlap.at[s].set(kept)

    state, overlap = jax.lax.fori_loop(0, checkpoints, segment, ((m, cols0, jnp.int32(0)),
                                                                 jnp.zeros(checkpoints, jnp.float32)))
    per_edge = state[2] / jnp.maximum(edges, 1)
    return state[0], {"overlap": overlap, "accepted": per_edge.astype(jnp.float32)}


def rewire(m: jax.Array, key: jax.Array, num_steps, checkpoints: int = CHECKPOINTS) -> tuple[jax.Array, dict]:
    """A 2-D bool mask with exactly the row and column sums of ``m``, drawn by ``num_steps`` attempted double-edge
    swaps (rounded up to a multiple of ``checkpoints``), through the complement if ``m`` is more than half full;
    and the diagnostic {``overlap`` [checkpoints], ``accepted``} (module docstring). ``num_steps`` may be traced
    (not batched: under vmap every network runs the same chain length)."""
    if m.ndim != 2:
        raise ConfigError(f"rewire: defined for 2-D (Dense) kernel masks; got shape {tuple(m.shape)}")
    complement = 2 * jnp.sum(m, dtype=jnp.int32) > m.size
    out, diagnostic = _swap_chain(m ^ complement, key, jnp.asarray(num_steps, jnp.int32), checkpoints)
    return out ^ complement, diagnostic


def check_dense(params) -> None:
    """ConfigError naming the first prunable kernel that is not 2-D: rewiring is defined for Dense kernels only."""
    for name, p in zip(masks.prunable_names(params), masks.prunable_leaves(params, params)):
        if len(np.shape(p)) != 2:
            raise ConfigError(f"ablation 'rewire': defined for Dense kernels [n_in, n_out] only; {name} has shape "
                              f"{tuple(np.shape(p))} (a conv kernel, whose unit degrees are not defined here)")


def chain_lengths(stacked_mask, params, swaps_per_edge: float) -> list[int]:
    """Per prunable layer: ⌈swaps_per_edge · E⌉ attempted swaps, E the most :func:`worked_edges` of any seed of
    ``stacked_mask`` (seed axis leading; ``params`` one seed's, for the structure). Host ints."""
    check_dense(params)
    return [int(np.ceil(swaps_per_edge * np.max(np.asarray(jax.vmap(worked_edges)(m)))))
            for m in masks.prunable_leaves(stacked_mask, params)]


def rewire_within_layers(mask, params, key: jax.Array, lengths: list) -> tuple:
    """(mask with every prunable layer :func:`rewire` d, {layer name: diagnostic}); layer l runs ``lengths[l]``
    attempted swaps (:func:`chain_lengths`) with the l-th key of ``split(key)``. Non-prunable leaves unchanged."""
    check_dense(params)
    leaves, treedef = jax.tree.flatten(mask)
    prunable = [i for i, keep in enumerate(jax.tree.leaves(masks.prunable(params))) if keep]
    keys = jax.random.split(key, len(prunable))
    diagnostics = {}
    for i, name, k, length in zip(prunable, masks.prunable_names(params), keys, lengths):
        leaves[i], diagnostics[name] = rewire(leaves[i], k, length)
    return jax.tree.unflatten(treedef, leaves), diagnostics
