"""Fixtures shared by the experiment tests."""
import numpy as np
import pytest


@pytest.fixture(scope="session")
def run_experiment(tmp_path_factory):
    """``run(experiment, config) -> (config, workdir, results)``: validate ``config`` and run the experiment module
    into a fresh workdir, as ``jaxprune.main`` does."""
    def run(experiment, config):
        experiment.validate(config)
        workdir = str(tmp_path_factory.mktemp(config.experiment))
        return config, workdir, experiment.run(config, workdir)

    return run


def assert_close_across_programs(actual, expected, rtol=1e-5):
    """``actual`` ≈ ``expected`` where the two come from different compiled programs (jit vs eager, fused vs not).

    Such programs may sum in another order, so an entry near zero can differ by a few ulps of the array's scale,
    which a relative tolerance alone rejects; the absolute tolerance is ``rtol`` times the largest |expected|."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected), initial=0.0)))
