"""Masks: structure, exact sparsity, deterministic ties, scopes and allocations, against direct counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from jaxprune import masks


def make_params(key=0):
    k = jax.random.split(jax.random.key(key), 4)
    return {
        "Dense_0": {"kernel": jax.random.normal(k[0], (6, 5)), "bias": jax.random.normal(k[1], (5,))},
        "Dense_1": {"kernel": jax.random.normal(k[2], (5, 3)), "bias": jax.random.normal(k[3], (3,))},
        "BatchNorm_0": {"scale": jnp.ones(5), "bias": jnp.zeros(5)},
    }


def test_prunable_marks_only_kernels():
    p = make_params()
    assert masks.prunable_names(p) == ["Dense_0/kernel", "Dense_1/kernel"]
    assert jax.tree.leaves(masks.prunable(p)).count(True) == 2


def test_apply_zeroes_exactly_even_non_finite_values():
    p = make_params()
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].at[0, 0].set(jnp.nan).at[0, 1].set(jnp.inf)
    m = masks.ones(p)
    m["Dense_0"]["kernel"] = m["Dense_0"]["kernel"].at[0, :2].set(False)
    out = masks.apply(p, m)
    assert np.all(np.asarray(out["Dense_0"]["kernel"][0, :2]) == 0.0)
    np.testing.assert_array_equal(out["Dense_1"]["kernel"], p["Dense_1"]["kernel"])


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_global_keeps_exactly_the_top_k_by_brute_force(sparsity):
    p = make_params()
    scores = jax.tree.map(jnp.abs, p)
    m = masks.from_scores(scores, p, sparsity)
    flat = np.concatenate([np.ravel(x) for x in masks.prunable_leaves(scores, p)])
    k = int(np.round((1 - sparsity) * flat.size))
    kept = np.concatenate([np.ravel(x) for x in masks.prunable_leaves(m, p)])
    assert kept.sum() == k
    expected = np.zeros(flat.size, bool)
    expected[np.argsort(-flat, kind="stable")[:k]] = True
    np.testing.assert_array_equal(kept, expected)
    # Non-prunable leaves stay all-True.
    assert bool(jnp.all(m["Dense_0"]["bias"])) and bool(jnp.all(m["BatchNorm_0"]["scale"]))


def test_top_k_equals_a_stable_sort_on_ties_zeros_infinities_nans_and_every_edge_k():
    """The sort-free selection (bits of the k-th largest score decided by counts) against NumPy's stable sort:
    scores drawn from a small set so most are tied, with ±0 (equal), ±inf, NaN (lowest), subnormal and extreme
    values, at k = 0, 1, n − 1, n, beyond n and random k. Subnormal scores count as 0, as in XLA's own sort on
    CPU (it flushes them), so the masks of every earlier run are unchanged."""
    special = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, np.nan, np.inf, -np.inf, 1e-40, -1e-40, 3.4e38, -3.4e38],
                       np.float32)
    rng = np.random.default_rng(0)
    select = jax.jit(masks._top_k_mask)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        scores = rng.choice(special, n) if trial % 2 else (rng.normal(size=n) * (rng.random(n) < 0.6)).astype(
            np.float32)
        ordered = np.where(np.isnan(scores), -np.inf, scores)  # NaN lowest
        ordered = np.where(np.abs(ordered) < np.finfo(np.float32).tiny, np.float32(0), ordered)  # ±0, subnormals
        for k in {0, 1, n - 1, n, n + 2, int(rng.integers(0, n + 1))}:
            expected = np.zeros(n, bool)
            expected[np.argsort(-ordered, kind="stable")[:k]] = True
            np.testing.assert_array_equal(select(jnp.asarray(scores), jnp.int32(k)), expected,
                                          err_msg=f"scores={scores.tolist()} k={k}")


def test_ties_broken_by_smaller_flat_index_and_nan_ranks_lowest():
    p = {"d": {"kernel": jnp.zeros((2, 3))}}
    scores = {"d": {"kernel": jnp.array([[1.0, 2.0, 1.0], [jnp.nan, 1.0, 2.0]])}}
    m = masks.from_scores(scores, p, 0.5)  # keep 3 of 6: both 2.0s, then the first 1.0 (index 0)
    np.testing.assert_array_equal(m["d"]["kernel"], [[True, True, False], [False, False, True]])
    m2 = masks.from_scores(scores, p, 0.5)
    np.testing.assert_array_equal(m["d"]["kernel"], m2["d"]["kernel"])


def test_layerwise_uniform_keeps_density_in_every_layer():
    p = make_params()
    m = masks.from_scores(jax.tree.map(jnp.abs, p), p, 0.6, scope="layerwise")
    for name, leaf in zip(masks.prunable_names(p), masks.prunable_leaves(m, p)):
        assert int(leaf.sum()) == int(np.round(0.4 * leaf.size)), name


def test_erk_densities_match_formula_and_budget():
    params = {"a": {"kernel": jnp.zeros((100, 50))}, "b": {"kernel": jnp.zeros((50, 10))}}
    d = 0.2
    dl = np.array([float(x) for x in masks.layer_densities(params, d, "erk")])
    raw = np.array([150 / 5000, 60 / 500])
    eps = d * 5500 / (raw * np.array([5000, 500])).sum()
    assert_close_across_programs(dl, eps * raw, rtol=1e-5)
    assert_close_across_programs((dl * np.array([5000, 500])).sum(), d * 5500, rtol=1e-5)


def test_erk_caps_layers_at_density_one_and_redistributes():
    params = {"a": {"kernel": jnp.zeros((1000, 1000))}, "b": {"kernel": jnp.zeros((2, 2))}}
    dl = [float(x) for x in masks.layer_densities(params, 0.5, "erk")]
    assert dl[1] == 1.0
    assert_close_across_programs(dl[0] * 1e6 + 4, 0.5 * (1e6 + 4), rtol=1e-5)


def test_restrict_gives_nested_masks():
    p = make_params()
    scores = jax.tree.map(jnp.abs, p)
    m1 = masks.from_scores(scores, p, 0.5)
    new_scores = jax.tree.map(lambda x: jax.random.normal(jax.random.key(3), x.shape), p)
    m2 = masks.from_scores(masks.restrict(new_scores, m1), p, 0.8)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))


def test_density_and_layer_density_count_prunable_weights():
    p = make_params()
    m = masks.from_scores(jax.tree.map(jnp.abs, p), p, 0.75)
    assert float(masks.density(m, p)) == pytest.approx(round(0.25 * 45) / 45)
    ld = masks.layer_density(m, p)
    total = sum(float(ld[n]) * x.size for n, x in zip(masks.prunable_names(p), masks.prunable_leaves(p, p)))
    assert total == pytest.approx(round(0.25 * 45))


def test_traced_sparsity_under_vmap_and_jit():
    p = make_params()
    scores = jax.tree.map(jnp.abs, p)
    sparsities = jnp.array([0.2, 0.6, 0.8])  # k avoids exact halves, where float32 and float64 round differently
    d = jax.jit(jax.vmap(lambda s: masks.density(masks.from_scores(scores, p, s), p)))(sparsities)
    assert_close_across_programs(d, [36 / 45, 18 / 45, 9 / 45], rtol=1e-6)


def test_shuffle_within_layers_preserves_layer_counts():
    p = make_params()
    m = masks.from_scores(jax.tree.map(jnp.abs, p), p, 0.7)
    s = masks.shuffle_within_layers(m, p, jax.random.key(1))
    for a, b in zip(masks.prunable_leaves(m, p), masks.prunable_leaves(s, p)):
        assert int(a.sum()) == int(b.sum())
    assert any(not np.array_equal(a, b) for a, b in zip(masks.prunable_leaves(m, p), masks.prunable_leaves(s, p)))
