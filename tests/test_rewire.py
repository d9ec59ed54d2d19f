"""Degree-preserving rewiring: exact degrees at every density, the uniform stationary law on a layer small enough to
enumerate every mask with its margins, the mixing diagnostic against its exact plateau, conv kernels refused."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxprune import rewire
from jaxprune.errors import ConfigError

START = np.array([[1, 1, 0, 0],
                  [0, 1, 0, 0],
                  [1, 0, 1, 1]], bool)  # margins r = (2, 1, 3), c = (2, 2, 1, 1): 5 of 12 entries are edges


def same_margins(m0: np.ndarray) -> list[np.ndarray]:
    """Every 0/1 matrix with the row and column sums of ``m0``, by brute force over all 2^(R·C) matrices."""
    out = []
    for bits in itertools.product([False, True], repeat=m0.size):
        m = np.array(bits).reshape(m0.shape)
        if (m.sum(0) == m0.sum(0)).all() and (m.sum(1) == m0.sum(1)).all():
            out.append(m)
    return out


CHAINS = jax.jit(jax.vmap(rewire.rewire, in_axes=(None, 0, None)))  # one compile: the chain length is an argument


def chains(m0: np.ndarray, num_chains: int, num_steps: int):
    out, diagnostic = CHAINS(jnp.asarray(m0), jax.random.split(jax.random.key(0), num_chains), num_steps)
    return np.asarray(out), jax.tree.map(np.asarray, diagnostic)


@pytest.mark.parametrize("start", [START, ~START], ids=["sparse", "through the complement"])
def test_chain_samples_uniformly_from_every_mask_with_the_same_margins(start):
    support = same_margins(start)
    assert len(support) > 5  # enough masks for uniformity to be a test
    out, diagnostic = chains(start, 6000, 200)
    index = {m.tobytes(): i for i, m in enumerate(support)}
    counts = np.bincount([index[m.tobytes()] for m in out], minlength=len(support))  # KeyError: margins broken
    chi2 = np.sum((counts - counts.mean()) ** 2 / counts.mean())
    assert stats.chi2.sf(chi2, len(support) - 1) > 1e-3, counts
    # The diagnostic's plateau: the overlap of the chain with its start (over the edges it moves) is the exact
    # stationary value E_unif |X ∩ m₀| / E from the enumeration; a chain of 8 steps has not reached it.
    worked = start if start.sum() * 2 <= start.size else ~start
    moved = lambda m: m if worked is start else ~m  # noqa: E731
    exact = np.mean([np.sum(moved(m) & worked) for m in support]) / worked.sum()
    final = diagnostic["overlap"][:, -1]
    assert abs(final.mean() - exact) < 4 * final.std() / np.sqrt(final.size)
    short = chains(start, 6000, 8)[1]["overlap"][:, 0]
    assert short.mean() > exact + 8 * short.std() / np.sqrt(short.size)


def test_every_unit_keeps_its_degrees_and_positions_change_at_any_density():
    densities = jnp.array([0.005, 0.02, 0.5, 0.98, 0.995]).repeat(2)  # two layers each, nearly empty to nearly full
    m0 = jax.random.uniform(jax.random.key(1), (10, 40, 30)) < densities[:, None, None]
    lengths = 10 * int(np.max(jax.vmap(rewire.worked_edges)(m0)))
    out, diagnostic = jax.jit(jax.vmap(rewire.rewire, in_axes=(0, 0, None)))(
        m0, jax.random.split(jax.random.key(2), 10), lengths)
    np.testing.assert_array_equal(out.sum(1), m0.sum(1))  # in-degree of every output unit
    np.testing.assert_array_equal(out.sum(2), m0.sum(2))  # out-degree of every input unit
    assert ((out != m0).reshape(10, -1).any(1)).all()
    assert (diagnostic["overlap"][:, -1] < 1).all() and (diagnostic["accepted"] > 0).all()


def test_layers_rewired_one_by_one_and_conv_kernels_refused():
    params = {"Dense_0": {"kernel": jnp.ones((12, 10)), "bias": jnp.ones(10)}, "Dense_1": {"kernel": jnp.ones((10, 3))}}
    mask = {"Dense_0": {"kernel": jax.random.uniform(jax.random.key(3), (12, 10)) < 0.3, "bias": jnp.ones(10, bool)},
            "Dense_1": {"kernel": jax.random.uniform(jax.random.key(4), (10, 3)) < 0.6}}
    stacked = jax.tree.map(lambda a: a[None], mask)
    lengths = rewire.chain_lengths(stacked, params, 10.0)
    assert lengths == [10 * int(rewire.worked_edges(mask["Dense_0"]["kernel"])),
                       10 * int(rewire.worked_edges(mask["Dense_1"]["kernel"]))]
    out, diagnostics = jax.jit(rewire.rewire_within_layers)(mask, params, jax.random.key(5), lengths)
    assert set(diagnostics) == {"Dense_0/kernel", "Dense_1/kernel"}
    np.testing.assert_array_equal(out["Dense_0"]["bias"], mask["Dense_0"]["bias"])
    for layer in ("Dense_0", "Dense_1"):
        a, b = np.asarray(mask[layer]["kernel"]), np.asarray(out[layer]["kernel"])
        np.testing.assert_array_equal(a.sum(0), b.sum(0))
        np.testing.assert_array_equal(a.sum(1), b.sum(1))
        assert (a != b).any()
    conv = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 4))}}
    with pytest.raises(ConfigError, match="Conv_0/kernel has shape \\(3, 3, 1, 4\\)"):
        rewire.rewire_within_layers(jax.tree.map(lambda p: p > 0, conv), conv, jax.random.key(0), [10])
