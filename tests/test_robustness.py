"""Lipschitz estimates against exact answers (linear maps) and bounds (ReLU nets); p_eff and the robustness scale."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from jaxprune import masks, models, robustness, train
from jaxprune.errors import ConfigError


def test_linear_map_input_gradient_equals_spectral_norm_equals_float64_lipschitz():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    params = {"Dense_0": {"kernel": jnp.asarray(w), "bias": jnp.ones(4)}}
    apply_fn = lambda p, x: x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]  # noqa: E731
    x = jnp.asarray(rng.standard_normal((7, 6)), jnp.float32)
    exact = np.linalg.svd(w.astype(np.float64), compute_uv=False)[0]  # Lip(x ↦ xW + b) = σ_max(W)
    norms = robustness.input_jacobian_norms(apply_fn, params, x, chunk=3)
    assert_close_across_programs(norms, exact, rtol=1e-5)  # the same at every point
    assert_close_across_programs(robustness.spectral_norm_product(params), exact, rtol=1e-5)


def test_single_output_jacobian_norm_is_the_gradient_norm():
    v = jnp.array([3.0, -4.0])
    apply_fn = lambda p, x: jnp.sum(jnp.sin(x * p), axis=1, keepdims=True)  # noqa: E731
    x = jnp.array([[0.1, 0.2], [1.0, -2.0]])
    expected = np.linalg.norm(np.asarray(v) * np.cos(np.asarray(x) * np.asarray(v)), axis=1)
    assert_close_across_programs(robustness.input_jacobian_norms(apply_fn, v, x), expected, rtol=1e-5)


def test_relu_net_input_gradient_is_below_the_spectral_product_of_masked_kernels():
    model = models.create("mlp", 3, widths=(16, 8))
    x = jax.random.normal(jax.random.key(1), (50, 5))
    params, _ = train.init_variables(model, jax.random.key(0), x[0])
    mask = masks.from_scores(jax.tree.map(jnp.abs, params), params, 0.5)
    sparse = masks.apply(params, mask)
    apply_fn = train.apply_fn_for(model, {})
    lower = np.max(robustness.input_jacobian_norms(apply_fn, sparse, x))
    upper = float(robustness.spectral_norm_product(sparse))
    kernels = [np.asarray(k, np.float64) for k in masks.prunable_leaves(sparse, sparse)]
    assert_close_across_programs(upper, np.prod([np.linalg.norm(k, 2) for k in kernels]), rtol=1e-5)
    assert 0 < lower <= upper
    # Brute force: the Jacobian at x_0 by central differences (float64 numpy forward pass).
    def f(v):
        h = v
        for i, k in enumerate(kernels):
            h = h @ k + np.asarray(sparse[f"Dense_{i}"]["bias"], np.float64)
            h = np.maximum(h, 0) if i < len(kernels) - 1 else h
        return h
    x0, eps = np.asarray(x[0], np.float64), 1e-6
    jac = np.stack([(f(x0 + eps * e) - f(x0 - eps * e)) / (2 * eps) for e in np.eye(5)], axis=1)
    np.testing.assert_allclose(robustness.input_jacobian_norms(apply_fn, sparse, x[:1])[0], np.linalg.norm(jac, 2),
                               rtol=1e-4)


def test_spectral_product_refuses_convolutions():
    with pytest.raises(ConfigError, match="MLPs"):
        robustness.spectral_norm_product({"Conv_0": {"kernel": jnp.ones((3, 3, 1, 2))}})


def test_p_eff_counts_every_kept_parameter_and_the_scale_formula():
    mask = {"Dense_0": {"kernel": jnp.array([[True, False], [True, True]]), "bias": jnp.ones(2, bool)}}
    assert int(robustness.nonzero_parameters(mask)) == 5
    rec = robustness.summary([5, 7], [1.0, 2.0], None, sigma=0.5, num_examples=100, input_dim=20)
    assert rec["p_eff"] == rec["p_eff_density_term"] == 6.0 and rec["p_eff_mi_term"] is None
    assert "not estimated" in rec["p_eff_note"] and rec["lipschitz_spectral_bound"] is None
    assert rec["robustness_scale"] == pytest.approx(0.5 * np.sqrt(100 * 20 / 6.0))
    with_mi = robustness.summary([6], [1.0], [2.0], sigma=1.0, num_examples=1, input_dim=1, mi_bits=2.0)
    assert with_mi["p_eff"] == pytest.approx(6.0 + 2.0 * np.log(2.0))  # MI in nats, as jaxprune.mi.p_eff
    assert robustness.random_label_std(4) == pytest.approx(np.sqrt(1 - 1 / 4))


def test_spectral_norm_equals_the_largest_singular_value_and_never_exceeds_it():
    """Repeated squaring of the Gram matrix (no LAPACK) against float64 SVD: random shapes, a near-degenerate top
    pair, rank one, and the zero matrix."""
    rng = np.random.default_rng(0)
    cases = [rng.standard_normal((int(rng.integers(1, 12)), int(rng.integers(1, 30)))) for _ in range(200)]
    cases += [np.diag([1.0, 0.9999, 0.5]), np.outer(rng.standard_normal(5), rng.standard_normal(7)), np.zeros((3, 4))]
    for a in cases:
        a = a.astype(np.float32)
        exact = np.linalg.svd(a.astype(np.float64), compute_uv=False)[0]
        got = float(robustness.spectral_norm(jnp.asarray(a)))
        assert got <= exact * (1 + 1e-6) + 1e-12
        np.testing.assert_allclose(got, exact, rtol=2e-6, atol=1e-12)
