"""Per-seed datasets (``config.data_per_seed``): the on-device draw against its definition, one dataset per seed,
the same for a seed alone as in the sweep on another layout, and the refusals."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxprune import data, main
from jaxprune.data import gaussian
from jaxprune.data.dataset import STREAMS
from jaxprune.errors import ConfigError
from jaxprune.experiments import common
from jaxprune.experiments import memorization as mem
from jaxprune.experiments import noise_correlation as nc
from tests.conftest import assert_close_across_programs
from tests.test_memorization import tiny_config
from tests.test_noise_correlation import tiny_config as nc_tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P_FAIL = 1e-3


def draw(key, **keys):
    defaults = dict(num_examples=4000, num_test=500, input_dim=8, num_classes=4, labels="random",
                    task="classification", teacher_widths=(), noise_std=0.5)
    return jax.jit(lambda k: gaussian.draw(k, **(defaults | keys)))(key)


def teacher_from_key(key, d, widths, outputs):
    """The teacher the docstring of gaussian.draw defines for ``key``, as float64 host weights."""
    shapes = gaussian.teacher_shapes(d, widths, outputs)
    keys = jax.random.split(jax.random.fold_in(key, STREAMS.index("teacher")), len(shapes))
    w = [np.asarray(jax.random.normal(k, s), np.float64) for k, s in zip(keys, shapes)]
    return w[:-1] + [gaussian.haar_columns(w[-1])]


def test_random_labels_draw_gaussian_inputs_and_uniform_labels_independent_of_x():
    sd = draw(jax.random.key(3))
    x, y = np.asarray(sd.x_train, np.float64), np.asarray(sd.y_train)
    assert sd.x_train.shape == (4000, 8) and sd.x_test.shape == (500, 8) and sd.noise is None
    assert y.dtype == np.int32 and set(np.unique(y)) == {0, 1, 2, 3}
    # x ~ N(0, I/d): every coordinate of sqrt(d) x is standard normal (Kolmogorov–Smirnov)
    assert stats.kstest((np.sqrt(8) * x).ravel(), "norm").pvalue > P_FAIL
    counts = np.bincount(y, minlength=4)
    assert stats.chisquare(counts).pvalue > P_FAIL
    table = np.zeros((4, 2))  # labels vs the sign of the first feature: independent
    np.add.at(table, (y, (x[:, 0] > 0).astype(int)), 1)
    assert stats.chi2_contingency(table)[1] > P_FAIL


@pytest.mark.parametrize("widths", [(), (16, 12)])
def test_teacher_labels_and_regression_targets_follow_the_teacher(widths):
    key, d = jax.random.key(5), 8
    sd = draw(key, labels="teacher", teacher_widths=widths)
    f = gaussian.teacher_apply(teacher_from_key(key, d, widths, 4), np.asarray(sd.x_train, np.float64))
    assert np.mean(np.asarray(sd.y_train) == f.argmax(1)) > 0.999  # float32 vs float64: near-ties only
    reg = draw(key, task="regression", teacher_widths=widths, noise_std=0.7)
    clean = gaussian.teacher_apply(teacher_from_key(key, d, widths, 1), np.asarray(reg.x_train, np.float64))[:, 0]
    np.testing.assert_allclose(reg.noise, np.asarray(reg.y_train, np.float64) - clean, atol=1e-4)
    assert stats.kstest(np.asarray(reg.noise, np.float64) / 0.7, "norm").pvalue > P_FAIL
    clean_test = gaussian.teacher_apply(teacher_from_key(key, d, widths, 1), np.asarray(reg.x_test, np.float64))
    np.testing.assert_allclose(reg.y_test, clean_test[:, 0], atol=1e-4)


def per_seed_config(**overrides):
    return tiny_config(**dict(data_per_seed=True, methods=("random",), sparsities=(0.5,), max_epochs=2, ablations=(),
                              widths=(8,)) | overrides)


def test_every_seed_draws_its_own_dataset_the_same_alone_as_in_the_sweep():
    sweep = common.init_seeds(common.setup(per_seed_config(num_seeds=4))).data
    x = np.asarray(sweep.x_train)
    assert x.shape == (4, 128, 8)
    assert all(not np.array_equal(x[i], x[j]) for i in range(4) for j in range(i))
    alone = common.init_seeds(common.setup(per_seed_config(num_seeds=1, seed_ids=(2,)))).data
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(sweep)):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[2])
    moved = jax.random.key_data(data.data_keys(1, range(4))) != jax.random.key_data(data.data_keys(0, range(4)))
    assert np.asarray(moved).any(axis=1).all()  # data_seed moves every seed's data key


def test_a_seed_alone_equals_that_seed_in_a_sweep_on_two_devices(tmp_path, run_experiment):
    config = per_seed_config()
    overrides = [f"--config.{k}={v}" for k, v in config.items() if k in (
        "num_examples", "num_test", "input_dim", "num_classes", "widths", "num_seeds", "batch_size", "max_epochs",
        "min_epochs", "sparsities", "prune_fraction", "data_per_seed", "ablations")]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxprune.main", "--config=configs/memorization.py",
                           f"--workdir={tmp_path / 'sweep'}", "--cpu_devices=2", "--config.methods=('random',)",
                           *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.load(open(tmp_path / "sweep" / "results.json"))
    alone = run_experiment(mem, per_seed_config(num_seeds=1, seed_ids=(1,)))[2]
    assert sweep["data_per_seed"] and sweep["devices"]["devices"] == min(2, len(os.sched_getaffinity(0)))
    assert len(sweep["results"]) == len(alone["results"]) == 2
    for a, b in zip(sweep["results"], alone["results"]):
        for key in ("train_accuracy", "train_loss", "epochs"):
            assert a[key][1] == np.asarray(b[key])[0], (a["method"], key)


@pytest.mark.parametrize("overrides,needle", [
    (dict(dataset="mnist1d"), "data_per_seed=True with dataset='mnist1d'"),
    (dict(label_noise=0.2, labels="teacher"), "label_noise"),
    (dict(teacher_widths=(0,)), "teacher_widths"),
    (dict(experiment="pai"), "experiment 'pai' shares one dataset"),
])
def test_data_per_seed_refusals_name_the_problem(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        main.validate(per_seed_config(**overrides))


def test_the_one_seed_draw_is_jittable_and_vmappable_from_the_config():
    config = per_seed_config(task="regression", teacher_widths=(6,))
    one = jax.jit(lambda k: data.draw(k, config))
    keys = data.data_keys(0, [0, 1, 2])
    many = jax.vmap(lambda k: data.draw(k, config))(keys)
    for i in range(3):  # a batched and an unbatched program: the same draw up to rounding
        assert_close_across_programs(many.y_train[i], one(keys[i]).y_train)
    assert jnp.issubdtype(many.y_train.dtype, jnp.floating) and many.noise.shape == (3, 128)


def test_noise_correlation_probes_every_seed_with_its_own_noise(run_experiment):
    config = nc_tiny_config(data_per_seed=True, methods=("random",), sparsities=(0.5,), ablations=())
    _, _, results = run_experiment(nc, config)
    dense = next(r for r in results["results"] if r["method"] == "dense")
    # A dense net fits part of ITS noise (another seed's noise would give ≈ 0).
    assert (np.asarray(dense["correlation"]) > 0.1).all() and np.shape(dense["correlation"]) == (2,)
