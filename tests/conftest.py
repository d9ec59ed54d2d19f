"""Fixtures shared by the experiment tests."""
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
