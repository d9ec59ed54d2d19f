"""Noise correlation: the measurement on known answers, regression scoring of SNIP/GraSP, a tiny run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import noise_correlation as nc_config
from jaxprune import data, pai
from jaxprune.errors import ConfigError
from jaxprune.experiments import memorization
from jaxprune.experiments import noise_correlation as nc


def tiny_config(**overrides):
    c = nc_config.get_config()
    c.update(dict(num_examples=128, num_test=16, input_dim=8, widths=(32,), num_seeds=2, batch_size=32,
                  learning_rate=0.02, methods=("imp", "snip", "grasp", "random"), sparsities=(0.6,), prune_fraction=0.5,
                  max_epochs=12, min_epochs=0, loss_window=2, synflow_rounds=2) | overrides)
    return c


def test_a_network_that_outputs_the_noise_has_correlation_one():
    z = jax.random.normal(jax.random.key(0), (50,))
    lookup = lambda w, x: x @ w  # noqa: E731  a linear net on one-hot inputs: f(e_i) = w_i
    x, w = jnp.eye(50), z[:, None]
    assert float(nc.noise_correlation(lookup(w, x)[:, 0], z)) == pytest.approx(1.0, abs=1e-6)
    assert float(nc.noise_correlation(-3 * z + 2, z)) == pytest.approx(-1.0, abs=1e-6)
    other = jax.random.normal(jax.random.key(1), (50,))
    a, b = np.asarray(other, np.float64), np.asarray(z, np.float64)
    expected = np.mean((a - a.mean()) * (b - b.mean())) / (a.std() * b.std())
    assert float(nc.noise_correlation(other, z)) == pytest.approx(expected, abs=1e-5)


def test_bubeck_sellke_term_against_its_formula():
    z = 0.5 * jax.random.normal(jax.random.key(0), (400,))
    teacher = jax.random.normal(jax.random.key(1), (400,))
    f, fz = np.asarray(teacher + z, np.float64), np.asarray(z, np.float64)
    assert float(nc.bubeck_sellke(teacher + z, z, 0.5)) == pytest.approx(np.sum(f * fz) / 400 / 0.25, rel=1e-5)
    assert float(nc.bubeck_sellke(teacher + z, z, 0.5)) == pytest.approx(1.0, abs=0.15)  # fits all the noise: ≈ 1
    assert float(nc.bubeck_sellke(teacher, z, 0.5)) == pytest.approx(0.0, abs=0.15)  # ignores it: ≈ 0


def test_the_correlation_quantities_on_hand_made_outputs_teacher_and_noise():
    f, z = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, -1.0, 0.0])
    assert float(nc.paper_correlation(f, z)) == pytest.approx((-1.0 * 1 + 0.0 * -1 + 1.0 * 0) / 3)  # mean f = 2
    assert float(nc.paper_correlation(f + 7.0, z)) == pytest.approx(-1 / 3)  # the output's mean is removed
    teacher = jnp.array([0.5, 1.0, -2.0, 0.25])
    noise = jnp.array([0.3, -0.6, 0.1, 0.2])
    sigma = 0.5
    # A net that outputs the teacher fits none of the noise: the noise-only columns are exactly 0, the full ones not.
    fit_teacher = nc.correlations(teacher, teacher, noise, sigma)
    assert fit_teacher["noise_only_correlation"] == 0.0 and fit_teacher["noise_only_bubeck_sellke"] == 0.0
    assert float(fit_teacher["bubeck_sellke"]) == pytest.approx((0.15 - 0.6 - 0.2 + 0.05) / 4 / 0.25)
    assert abs(float(fit_teacher["correlation"])) > 0.1
    # A net that outputs teacher + noise fits all of it.
    fit_all = nc.correlations(teacher + noise, teacher, noise, sigma)
    assert float(fit_all["noise_only_correlation"]) == pytest.approx(1.0, abs=1e-6)
    assert float(fit_all["noise_only_bubeck_sellke"]) == pytest.approx(float(jnp.mean(noise**2)) / 0.25, rel=1e-5)
    # Half the noise: correlation still 1 (scale-free), the Bubeck–Sellke term halves.
    fit_half = nc.correlations(teacher + noise / 2, teacher, noise, sigma)
    assert float(fit_half["noise_only_bubeck_sellke"]) == pytest.approx(
        float(fit_all["noise_only_bubeck_sellke"]) / 2, rel=1e-5)
    # A constant output fits no noise: 0 everywhere, not NaN.
    constant = nc.correlations(jnp.full(4, 3.0), teacher, noise, sigma)
    assert float(constant["correlation"]) == 0.0 and float(constant["paper_correlation"]) == 0.0
    assert np.isfinite([float(v) for v in constant.values()]).all()


def test_regression_scoring_loss_is_half_mean_squared_error_without_temperature():
    x, y = jnp.array([[1.0], [2.0], [3.0]]), jnp.array([0.5, 0.0, 1.0])
    apply_fn = lambda w, x: x * w  # noqa: E731
    expected = np.mean(0.5 * (np.array([1.0, 2.0, 3.0]) * 2.0 - np.array([0.5, 0.0, 1.0])) ** 2)
    assert float(pai.scoring_loss(apply_fn, 2.0, (x, y), temperature=200.0)) == pytest.approx(expected)


def test_swap_draws_the_noise_again_with_the_same_inputs_and_teacher():
    config = tiny_config(num_examples=4000)
    d = data.load(config)
    swapped = memorization.redrawn_dataset(config, d)
    for key in ("x_train", "x_test", "y_test", "clean_y_train"):
        np.testing.assert_array_equal(getattr(swapped, key), getattr(d, key))
    np.testing.assert_array_equal(swapped.noise, swapped.y_train - swapped.clean_y_train)
    z, z2 = d.noise.astype(np.float64), swapped.noise.astype(np.float64)
    assert abs(np.corrcoef(z, z2)[0, 1]) < 4 / np.sqrt(4000)  # independent of D's noise
    assert abs(z2.std() / config.noise_std - 1) < 4 / np.sqrt(2 * 4000) and abs(z2.mean()) < 4 * 0.5 / np.sqrt(4000)


@pytest.fixture(scope="module")
def tiny_run(run_experiment):
    return run_experiment(nc, tiny_config())


def test_tiny_run_reports_the_noise_fitted_at_convergence_by_every_method_and_imp_round(tiny_run):
    config, workdir, results = tiny_run
    by_method = {r["method"]: r for r in results["results"]}
    controls = {f"{m}+{a}" for m in ("imp", "snip", "grasp") for a in ("shuffle", "swap", "rewire")}
    assert set(by_method) == {"dense", *config.methods, *controls}
    for r in results["results"]:
        assert (np.abs(r["correlation"]) <= 1).all() and np.shape(r["bubeck_sellke"]) == (2,)
        assert (np.abs(r["noise_only_correlation"]) <= 1).all() and np.shape(r["paper_correlation"]) == (2,)
        assert ((1 <= np.asarray(r["epochs"])) & (np.asarray(r["epochs"]) <= config.max_epochs)).all()
        assert r["p_eff_mi_term"] is None and (r["robustness_scale"] is None) == (r["robustness_note"] is not None)
    # The dense net fits part of the noise.
    assert (np.asarray(by_method["dense"]["correlation"]) > 0.1).all()
    assert [r["density"] for r in results["imp_rounds"]] == [0.5, pytest.approx(0.4)]
    assert by_method["imp"]["sparsity"] == pytest.approx(0.6)
    np.testing.assert_array_equal(results["imp_rounds"][-1]["correlation"], by_method["imp"]["correlation"])
    assert {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]} >= {
        ("imp", "imp+shuffle", "correlation"), ("imp", "imp+swap", "correlation"), ("imp", "imp+rewire", "correlation"),
        ("imp", "random", "bubeck_sellke")}
    # The swap masks were found with other noise: IMP's and SNIP's differ from their own (same density).
    for m in ("imp", "snip"):
        assert by_method[f"{m}+swap"]["density"] == by_method[m]["density"]
        assert not np.array_equal(by_method[f"{m}+swap"]["train_loss"], by_method[m]["train_loss"])
    assert {"correlation_vs_density.png", "bubeck_sellke_vs_density.png", "imp_correlation_vs_density.png",
            "paired_differences.png", "metrics.jsonl"} <= set(os.listdir(workdir))


@pytest.mark.parametrize("key,value", [("task", "classification"), ("dataset", "mnist1d"), ("sparsities", (1.0,)),
                                       ("methods", ()), ("accuracy_patience", 3)])
def test_validation_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        nc.validate(tiny_config(**{key: value}))
