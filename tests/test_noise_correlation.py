"""Noise correlation: the measurement on known answers, regression scoring of SNIP/GraSP, a tiny run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import noise_correlation as nc_config
from jaxprune import pai
from jaxprune.errors import ConfigError
from jaxprune.experiments import noise_correlation as nc


def tiny_config(**overrides):
    c = nc_config.get_config()
    c.update(dict(num_examples=128, num_test=16, input_dim=8, widths=(32,), num_seeds=2, epochs=10, batch_size=32,
                  learning_rate=0.02, methods=("imp", "snip", "grasp", "random"), sparsity=0.6, prune_fraction=0.5)
             | overrides)
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


def test_regression_scoring_loss_is_half_mean_squared_error_without_temperature():
    x, y = jnp.array([[1.0], [2.0], [3.0]]), jnp.array([0.5, 0.0, 1.0])
    apply_fn = lambda w, x: x * w  # noqa: E731
    expected = np.mean(0.5 * (np.array([1.0, 2.0, 3.0]) * 2.0 - np.array([0.5, 0.0, 1.0])) ** 2)
    assert float(pai.scoring_loss(apply_fn, 2.0, (x, y), temperature=200.0)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def tiny_run(run_experiment):
    return run_experiment(nc, tiny_config())


def test_tiny_run_tracks_the_correlation_of_every_method_and_imp_round(tiny_run):
    config, workdir, results = tiny_run
    by_method = {r["method"]: r for r in results["results"]}
    assert set(by_method) == {"dense", *config.methods}
    for r in results["results"]:
        curve = np.asarray(r["correlation"])
        assert curve.shape == (2, config.epochs + 1) and (np.abs(curve) <= 1).all()
        np.testing.assert_array_equal(curve[:, -1], r["final_correlation"])
        assert r["p_eff_mi_term"] is None and r["robustness_scale"] > 0
    # The dense net fits part of the noise: its correlation rises from its initial value.
    dense = np.asarray(by_method["dense"]["correlation"])
    assert (dense[:, -1] > dense[:, 0]).all() and (dense[:, -1] > 0.1).all()
    assert [r["density"] for r in results["imp_rounds"]] == [0.5, pytest.approx(0.4)]
    assert by_method["imp"]["sparsity"] == pytest.approx(config.sparsity)
    np.testing.assert_array_equal(results["imp_rounds"][-1]["final_correlation"], by_method["imp"]["final_correlation"])
    assert {"correlation_vs_epoch.png", "imp_correlation_vs_density.png", "metrics.jsonl"} <= set(os.listdir(workdir))


@pytest.mark.parametrize("key,value", [("task", "classification"), ("dataset", "mnist1d"), ("sparsity", 1.0),
                                       ("methods", ())])
def test_validation_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        nc.validate(tiny_config(**{key: value}))
