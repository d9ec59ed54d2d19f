"""Tests for the mask-ensemble MI experiment: vmapped ensembles equal per-(draw, repeat, seed) computation,
data-independent methods estimate 0 (interval holds 0, no excess over the permutation null), p_eff
arithmetic, and a tiny end-to-end run."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import mutual_information as mi_config
from jaxprune import config as jconfig
from jaxprune import masks, mi, train
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import mutual_information as mie

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "configs", "mutual_information.py")


def tiny_config(**overrides):
    c = mi_config.get_config()
    c.update(dict(num_examples=64, num_test=64, input_dim=8, num_classes=2, widths=(8,), epochs=2, batch_size=16,
                  num_draws=4, repeats=4, num_folds=2, num_permutations=2, synflow_rounds=3,
                  prune_fraction=0.5, sparsity=0.75, draw_noise=1.0, learning_rate=0.05, noise_bits=0,
                  noise_masks=8, capacity=False, max_epochs=3, min_epochs=0, num_seeds=2))
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def tiny():
    """(config, setup, seeds, labels [K, n], keys [K, R, S]) of a tiny gaussian problem, 2 seeds."""
    config = tiny_config()
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    keys = jax.random.split(jax.random.key(1), (config.num_draws, config.repeats, config.num_seeds))
    labels = mie.draw_labels(setup.dataset.clean_y_train, 2, 1.0, jax.random.split(jax.random.key(2), 4))
    return config, setup, seeds, labels, keys


def seed_slice(tree, s):
    return jax.tree.map(lambda a: a[s], tree)


def test_draw_labels_redraw_the_requested_fraction():
    clean = np.zeros(1000, np.int32)
    labels = np.asarray(mie.draw_labels(clean, 2, 0.5, jax.random.split(jax.random.key(0), 3)))
    assert labels.shape == (3, 1000)
    # half the labels are redrawn uniformly from {0, 1}: about a quarter become 1, differently per draw
    assert np.all(np.abs(labels.mean(1) - 0.25) < 0.05)
    assert not np.array_equal(labels[0], labels[1])


def test_training_track_ensemble_equals_per_network_computation(tiny):
    config, setup, seeds, labels, keys = tiny
    stacked = mie.method_ensemble("magnitude_after", config, setup, seeds, labels, keys)
    params_one = seed_slice(seeds.params, 0)
    flat = mie.flat_masks(stacked, params_one)
    num_prunable = sum(np.size(p) for p in masks.prunable_leaves(params_one, params_one))
    assert flat.shape == (4, 4, 2, config.epochs + 1, num_prunable)
    tx = train.optimizer_from_config(config, train.steps_per_epoch(64, config.batch_size))
    for k, r, s in [(0, 0, 0), (3, 1, 1), (2, 3, 0)]:
        one = mie.training_track(config, setup, tx, seed_slice(seeds.params, s), seed_slice(seeds.batch_stats, s),
                                 labels[k], keys[k, r, s])
        np.testing.assert_array_equal(flat[k, r, s], mie.flat_masks(one, params_one))
    assert np.allclose(flat.mean(-1), 0.25, atol=1 / num_prunable)


def test_pai_ensemble_equals_per_seed_computation(tiny):
    config, setup, seeds, labels, keys = tiny
    flat = mie.flat_masks(mie.method_ensemble("snip", config, setup, seeds, labels, keys), seed_slice(seeds.params, 0))
    assert flat.shape[:4] == (4, 4, 2, 1)
    for k, r, s in [(1, 2, 0), (3, 0, 1)]:
        one_seed = jax.tree.map(lambda a: a[s:s + 1], (seeds.params, seeds.batch_stats))
        direct = masking.pai_mask("snip", config, setup, *jax.tree.map(lambda a: a[0], one_seed), keys[k, r, s],
                                  config.sparsity, labels[k])
        np.testing.assert_array_equal(flat[k, r, s, 0], mie.flat_masks(direct, seed_slice(seeds.params, 0)))
    # the repeats differ (different scoring batches), so the ensemble holds the method's own randomness
    assert not np.array_equal(flat[0, 0, 0], flat[0, 1, 0])


@pytest.mark.parametrize("method", mie.DATA_INDEPENDENT)
def test_data_independent_methods_estimate_zero(tiny, method):
    config, setup, seeds, labels, keys = tiny
    flat = mie.flat_masks(mie.method_ensemble(method, config, setup, seeds, labels, keys), seed_slice(seeds.params, 0))
    result, per_seed = mie.estimate_given_init(flat[:, :, :, -1], config, jax.random.key(0))
    assert len(per_seed) == config.num_seeds
    assert result.lower <= 1e-6 and result.lower <= result.bits <= result.upper
    assert result.bits <= np.max(result.null_bits) + 0.1
    if method != "random":  # deterministic given W: every mask of a seed is the same, the estimate 0
        assert (flat == flat[:1, :1]).all(axis=(0, 1)).all()
        assert result.bits <= 1e-6


def test_conditional_averages_over_seeds_with_bonferroni():
    a = mi.MIResult(1.0, 0.5, 2.0, np.array([0.1, 0.3]), "classifier")
    b = mi.MIResult(0.0, 0.0, 0.0, np.array([0.0, 0.1]), "plugin")
    c = mi.conditional([a, b])
    assert (c.bits, c.lower, c.upper) == (0.5, 0.25, 1.0)
    np.testing.assert_allclose(c.null_bits, [0.05, 0.2])
    assert c.method == "classifier+plugin"
    assert mi.seed_confidence(0.95, 5) == pytest.approx(0.99)
    with pytest.raises(ConfigError):
        mi.conditional([])


def test_p_eff_adds_every_kept_parameter_and_nats():
    assert mi.p_eff(140.8, 3.0) == pytest.approx(140.8 + 3.0 * math.log(2.0))
    assert mi.p_eff(140.8, None) == 140.8  # MI not estimated
    row = mie.summary(mi.MIResult(2.0, 1.0, 3.0, np.zeros(2), "classifier"), [], 100.0, 10, 3.0, proxy=True)
    assert row["expected_nonzero"] == 110.0 and row["num_permutations"] == 2 and row["p_eff_is_proxy"]
    assert row["p_eff_nats"] == pytest.approx(110 + 2 * math.log(2))
    assert row["p_eff_nats_interval"] == pytest.approx([110 + math.log(2), 110 + 3 * math.log(2)])
    params = {"Dense_0": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}, "Dense_1": {"kernel": np.zeros((4, 2)),
                                                                                            "bias": np.zeros(2)}}
    assert mie.unpruned(params) == 6  # the biases


@pytest.mark.parametrize("key,value", [("methods", ("random", "nope")), ("num_draws", 1), ("sparsity", 0.0),
                                       ("draw_noise", 0.0), ("estimator", "knn"), ("repeats", 1)])
def test_validate_rejects_bad_keys(key, value):
    with pytest.raises(ConfigError, match=key if key != "repeats" else "num_draws"):
        mie.validate(tiny_config(num_draws=2, **{key: value}) if key == "repeats" else tiny_config(**{key: value}))


def test_noise_bits_at_most_the_examples():
    config = tiny_config(noise_bits=65)
    with pytest.raises(ConfigError, match="noise_bits=65"):
        mie.check_data(config, common.setup(config).dataset)


def test_noise_draws_switch_to_the_alternative_label_exactly_on_the_bits():
    y = jax.numpy.asarray(np.arange(250) % 10)
    bits, labels = mie.noise_draws(y, 10, 30, 200, jax.random.key(0))
    bits, labels, y = np.asarray(bits), np.asarray(labels), np.asarray(y)
    assert bits.shape == (30, 200) and labels.shape == (30, 250) and abs(bits.mean() - 0.5) < 0.03
    np.testing.assert_array_equal(labels[:, :200] == y[:200], ~bits)  # the alternative label always differs from y
    np.testing.assert_array_equal(labels[:, 200:], np.broadcast_to(y[200:], (30, 50)))  # no bit: label kept
    alternative = np.where(bits, labels[:, :200], -1).max(0)  # one alternative per example, shared by the draws
    assert np.all((labels[:, :200] == y[:200]) | (labels[:, :200] == alternative))
    assert len(np.unique(alternative)) == 10


def test_saturated_when_the_interval_reaches_the_cap():
    assert mie.saturated(mi.MIResult(2.9, 2.75, 3.0, np.zeros(1), "classifier"), 3.0)
    assert not mie.saturated(mi.MIResult(2.5, 2.3, 3.0, np.zeros(1), "classifier"), 3.0)


def test_tiny_run_writes_estimates_and_figures(tmp_path):
    config = tiny_config(methods=("magnitude", "imp", "magnitude_after"), noise_bits=16,
                         noise_methods=("magnitude", "magnitude_after"), capacity=True,
                         capacity_methods=("magnitude", "magnitude_after"))
    jconfig.validate_common(config)
    mie.validate(config)
    results = mie.run(config, str(tmp_path))
    fields = set(mi.MIResult._fields) | {"null_mean", "null_max", "per_seed", "p_eff_nats", "expected_kept"}
    assert set(results["methods"]) == set(config.methods)
    for row in list(results["methods"].values()) + results["imp_rounds"] + results["training_time"]:
        assert fields <= set(row) and row["lower"] <= row["bits"] <= row["upper"]
        assert len(row["per_seed"]) == config.num_seeds
    assert results["methods"]["magnitude"]["bits"] <= 1e-6
    assert [r["stage"] for r in results["training_time"]] == list(range(config.epochs + 1))
    assert results["training_time"][0]["bits"] <= 1e-6  # t = 0: magnitude at init, data-independent
    trained = results["training_time"][-1]  # after training the mask depends on the labels, beyond the null
    assert trained["lower"] > trained["null_max"] and trained["bits"] <= math.log2(config.num_draws)
    assert results["imp_rounds"][-1]["density"] == pytest.approx(1 - config.sparsity, abs=0.02)
    assert all(isinstance(r["saturated"], bool) for r in results["methods"].values())
    noise = results["noise_bits_bound"]
    assert noise["magnitude"]["upper"] == 16.0 and noise["magnitude"]["bits"] <= 1e-6  # one mask per seed
    assert [r["stage"] for r in results["noise_bits_training_time"]] == [0, 2]  # every 4th epoch and the last
    assert [r["method"] for r in results["headline"]] == sorted(noise, key=lambda m: -noise[m]["bits"])
    for row in results["headline"]:
        assert row["memorized_fraction"] == pytest.approx(results["capacity"][row["method"]]["memorized_fraction_mean"])
        assert row["p_eff_nats"] == pytest.approx(mi.p_eff(row["expected_nonzero"], row["bits"]))
        assert row["expected_nonzero"] > row["expected_kept"] and row["p_eff_is_proxy"]
    assert os.path.exists(tmp_path / "memorization" / "memorization_vs_density.png")
    for name in ("mi_by_method.png", "mi_vs_training_time.png", "mi_vs_imp_round.png", "mi_noise_bits_by_method.png",
                 "mi_vs_training_time_noise_bits.png"):
        assert os.path.getsize(tmp_path / name) > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {line["pruning"] for line in lines if line["design"] == "draws"} == set(config.methods)
    assert len(lines) == 1 + len(results["imp_rounds"]) + len(results["training_time"]) + 1 + 2
    json.dumps(results, default=lambda o: o.tolist())


def test_cli(tmp_path):
    """Passes once ``mutual_information`` is registered in jaxprune/experiments/__init__.py."""
    overrides = [f"--config.{k}={v}" for k, v in dict(num_examples=64, num_test=64, input_dim=8, widths="(8,)",
                                                       epochs=1, batch_size=16, num_draws=2, repeats=2, num_folds=2,
                                                       num_permutations=1, methods="('magnitude',)", noise_bits=4,
                                                       noise_masks=4, noise_methods="('random',)",
                                                       capacity=False).items()]
    out = subprocess.run([sys.executable, "-m", "jaxprune.main", f"--config={CONFIG_FILE}",
                          f"--workdir={tmp_path}", *overrides], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["methods"]["magnitude"]["bits"] <= 1e-6 and results["headline"][0]["upper"] == 4.0
