"""The pai experiment: result rows (keys, shapes, exact densities), the sanity ablations as defined, layer collapse
reporting, batched training == one call per sparsity, config validation, and the command line."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import pai as pai_config
from jaxprune import masks
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import pai as pai_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(dataset="gaussian", labels="teacher", num_examples=256, num_test=128, input_dim=8, num_classes=3,
            widths=(16,), num_seeds=2, epochs=1, batch_size=32, sparsities=(0.5, 0.9), synflow_rounds=3)
ROW_KEYS = {"method", "sparsity", "density", "layer_density", "collapsed_layers", "test_accuracy", "train_accuracy",
            "test_loss", "train_loss", "failed_seeds", "effective_density", "effective_layer_density", "dead_layers",
            "disconnected"}


def tiny_config(**overrides):
    c = pai_config.get_config()
    c.update({**TINY, **overrides})
    return c


@pytest.fixture(scope="module")
def tiny_run(run_experiment):
    return run_experiment(pai_experiment, tiny_config(methods=("magnitude", "imp"), ablations=("reinit", "invert"),
                                                      dense_reference=False))


@pytest.fixture(scope="module")
def tiny_setup():
    config = tiny_config()
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    return config, setup, seeds, masking.method_masks("magnitude", config, setup, seeds, config.sparsities)


def num_prunable(params_one_seed) -> int:
    return masks.count(masks.ones(params_one_seed), params_one_seed)[1]


def test_rows_cover_every_method_ablation_and_sparsity_with_per_seed_values(tiny_run):
    config, _, results = tiny_run
    expected = {(name, s) for name in ("magnitude", "magnitude+reinit", "magnitude+invert", "imp", "imp+reinit")
                for s in config.sparsities}
    rows = results["results"]
    assert sorted((r["method"], r["sparsity"]) for r in rows) == sorted(expected)
    for r in rows:
        assert set(r) == ROW_KEYS
        for key in ("density", "test_accuracy", "train_accuracy", "test_loss", "train_loss"):
            assert np.shape(r[key]) == (config.num_seeds,)
        assert set(r["layer_density"]) == {"Dense_0/kernel", "Dense_1/kernel"}
        assert all(np.shape(v) == (config.num_seeds,) for v in r["layer_density"].values())
        assert np.all((np.asarray(r["test_accuracy"]) >= 0) & (np.asarray(r["test_accuracy"]) <= 1))
    assert results["pai_batches"] == config.pai_batches and results["synflow_rounds"] == config.synflow_rounds


def test_row_densities_are_exact_and_match_the_layer_densities(tiny_run):
    config, _, results = tiny_run
    sizes = {"Dense_0/kernel": 8 * 16, "Dense_1/kernel": 16 * 3}
    n = sum(sizes.values())
    for r in results["results"]:
        np.testing.assert_allclose(r["density"], round((1 - r["sparsity"]) * n) / n, rtol=1e-6)
        kept = sum(np.asarray(r["layer_density"][k]) * sizes[k] for k in sizes)
        np.testing.assert_allclose(kept / n, r["density"], rtol=1e-6)
        empty = {k: np.flatnonzero(np.asarray(v) == 0).tolist() for k, v in r["layer_density"].items() if 0 in v}
        assert r["collapsed_layers"] == empty


def test_run_writes_metrics_and_figures(tiny_run):
    config, workdir, results = tiny_run
    outputs = {"metrics.jsonl", "test_accuracy_vs_density.png", "train_accuracy_vs_density.png"}
    assert outputs <= set(os.listdir(workdir))
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert len(lines) == len(results["results"]) * config.num_seeds
    assert all(len(x["epoch_loss"]) == config.epochs for x in lines)


def test_shuffle_keeps_each_layers_count_and_moves_the_weights(tiny_setup):
    config, setup, seeds, base = tiny_setup
    same_seeds, shuffled, _ = pai_experiment.ablated("shuffle", "magnitude", config, setup, seeds, base)
    assert same_seeds is seeds
    one = jax.tree.map(lambda x: x[0], seeds.params)
    for s in config.sparsities:
        for a, b in zip(masks.prunable_leaves(base[s], one), masks.prunable_leaves(shuffled[s], one)):
            np.testing.assert_array_equal(np.sum(a, axis=(1, 2)), np.sum(b, axis=(1, 2)))
            assert not np.array_equal(a, b)
        for a, keep in zip(jax.tree.leaves(shuffled[s]), jax.tree.leaves(masks.prunable(one))):
            assert keep or np.all(a)


def test_invert_keeps_the_complement_of_a_tie_free_ranking(tiny_setup):
    config, setup, seeds, base = tiny_setup
    one = jax.tree.map(lambda x: x[0], seeds.params)
    assert round(0.5 * num_prunable(one)) * 2 == num_prunable(one)  # half kept: the complement has the same size
    _, inverted, _ = pai_experiment.ablated("invert", "magnitude", config, setup, seeds, base)
    for a, b in zip(masks.prunable_leaves(base[0.5], one), masks.prunable_leaves(inverted[0.5], one)):
        np.testing.assert_array_equal(np.asarray(a), ~np.asarray(b))
    for i in range(config.num_seeds):
        flat_m = np.concatenate([np.ravel(m[i]) for m in masks.prunable_leaves(inverted[0.9], one)])
        flat_w = np.concatenate([np.ravel(np.abs(p[i])) for p in masks.prunable_leaves(seeds.params, one)])
        assert flat_w[flat_m].max() < flat_w[~flat_m].min()  # the kept weights are the smallest |θ|


def test_reinit_changes_the_weights_but_not_the_mask_or_the_data_order(tiny_setup):
    config, setup, seeds, base = tiny_setup
    fresh, same_masks, _ = pai_experiment.ablated("reinit", "magnitude", config, setup, seeds, base)
    assert same_masks is base
    one = jax.tree.map(lambda x: x[0], seeds.params)
    for a, b in zip(masks.prunable_leaves(fresh.params, one), masks.prunable_leaves(seeds.params, one)):
        assert a.shape == b.shape and not np.any(np.asarray(a) == np.asarray(b))
    np.testing.assert_array_equal(jax.random.key_data(fresh.order_keys), jax.random.key_data(seeds.order_keys))


def test_rewire_keeps_every_units_degrees_and_reports_the_chains_mixing(tiny_setup):
    config, setup, seeds, base = tiny_setup
    same_seeds, rewired, mixing = pai_experiment.ablated("rewire", "magnitude", config, setup, seeds, base)
    assert same_seeds is seeds and set(mixing) == set(config.sparsities)
    one = jax.tree.map(lambda x: x[0], seeds.params)
    for s in config.sparsities:
        assert set(mixing[s]) == {"Dense_0/kernel", "Dense_1/kernel"}
        for i, (a, b) in enumerate(zip(masks.prunable_leaves(base[s], one), masks.prunable_leaves(rewired[s], one))):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_array_equal(a.sum(1), b.sum(1))  # in-degrees, per seed
            np.testing.assert_array_equal(a.sum(2), b.sum(2))  # out-degrees
            if i == 0:  # the 8 x 16 input layer has many masks with its degrees (the 16 x 3 one may be empty)
                assert (a != b).reshape(config.num_seeds, -1).any(1).all()


def test_swap_finds_the_mask_on_the_noisy_labels_drawn_again():
    config = tiny_config(label_noise=0.5)
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    for method, moves in (("magnitude", False), ("snip", True)):
        own = masking.method_masks(method, config, setup, seeds, config.sparsities)
        same_seeds, swapped, _ = pai_experiment.ablated("swap", method, config, setup, seeds, own)
        assert same_seeds is seeds
        equal = all(np.array_equal(a, b) for s in config.sparsities
                    for a, b in zip(jax.tree.leaves(own[s]), jax.tree.leaves(swapped[s])))
        assert equal != moves, method


@pytest.mark.parametrize("overrides,needle", [(dict(ablations=("swap",)), "needs config.label_noise > 0"),
                                              (dict(ablations=("rewire",), model="conv2"), "Dense kernels only"),
                                              (dict(ablations=("flip",)), "ablations")])
def test_controls_refused_where_undefined(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        pai_experiment.validate(tiny_config(**overrides))


def test_ablations_apply_to_every_method_but_random_and_invert_only_at_init():
    assert not pai_experiment.ablation_applies("shuffle", "random")
    assert pai_experiment.ablation_applies("reinit", "imp") and pai_experiment.ablation_applies("invert", "snip")
    assert not pai_experiment.ablation_applies("invert", "imp")
    assert not pai_experiment.ablation_applies("invert", "magnitude_after")


def test_batched_training_equals_one_call_per_sparsity(tiny_setup):
    config, setup, seeds, base = tiny_setup
    last = masking.train_mask_sets(config, setup, seeds, list(base.values()))[-1]
    alone = masking.train_masked(config, setup, seeds, base[config.sparsities[-1]])
    for key in ("test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch_loss"):
        np.testing.assert_allclose(last[key], alone[key], rtol=1e-5, atol=1e-6)


def test_mask_report_lists_empty_and_dead_layers_per_seed(tiny_setup):
    config, setup, seeds, _ = tiny_setup
    mask = jax.vmap(masks.ones)(seeds.params)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[0, 0, 0].set(False)  # seed 0: one weight fewer
    mask["Dense_1"]["kernel"] = mask["Dense_1"]["kernel"].at[1].set(False)  # seed 1: the output layer empty
    report = masking.mask_report(setup, seeds, mask)
    sizes = {k: np.prod(v.shape[1:]) for k, v in zip(masks.prunable_names(jax.tree.map(lambda a: a[0], seeds.params)),
                                                      masks.prunable_leaves(seeds.params, seeds.params))}
    total = sum(sizes.values())
    assert report["collapsed_layers"] == {"Dense_1/kernel": [1]}
    np.testing.assert_allclose(report["layer_density"]["Dense_0/kernel"], [1 - 1 / sizes["Dense_0/kernel"], 1.0])
    np.testing.assert_allclose(report["density"], [(total - 1) / total, sizes["Dense_0/kernel"] / total])
    # seed 1's first layer keeps every weight, but none is on a path to the (empty) output layer
    assert report["dead_layers"] == {"Dense_0/kernel": [1], "Dense_1/kernel": [1]} and report["disconnected"] == [1]
    np.testing.assert_allclose(report["effective_density"], [(total - 1) / total, 0.0])


@pytest.mark.parametrize("key,value", [("ablations", ("shuffle", "flip")), ("ablations", ("invert", "invert")),
                                       ("methods", ("snip", "lottery")), ("sparsities", (0.5, 1.0)),
                                       ("pai_batches", 0)])
def test_validate_names_the_bad_key(key, value):
    with pytest.raises(ConfigError, match=key):
        pai_experiment.validate(tiny_config(**{key: value}))


def test_cli_runs_the_pai_experiment(tmp_path):
    """Needs 'pai' registered in jaxprune.experiments.REGISTRY."""
    workdir = str(tmp_path / "run")
    overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxprune.main", "--config=configs/pai.py", f"--workdir={workdir}",
                           *overrides, "--config.methods=('random','snip')"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert [(r["method"], r["sparsity"]) for r in results["results"]] == [
        ("dense", 0.0), ("random", 0.5), ("random", 0.9), ("snip", 0.5), ("snip", 0.9)]
    np.testing.assert_array_equal(results["results"][0]["density"], [1.0, 1.0])
    assert "test accuracy (mean ± sd over seeds)" in proc.stdout
