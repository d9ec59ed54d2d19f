"""Tests of the AutoSparse experiment: layer depth in execution order, exact sparsity of AutoSparse masks through
masking, and a tiny in-process run checked against written-down definitions (CCC, dataset rows)."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from configs.autosparse import get_config
from jaxprune import autosparse, masks, models, stats, train
from jaxprune.config import validate_common
from jaxprune.errors import ConfigError
from jaxprune.experiments import autosparse as experiment
from jaxprune.experiments import common, masking

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(dataset="gaussian", num_examples=192, num_test=96, input_dim=8, num_classes=3, widths=(16,), epochs=1,
            batch_size=32, num_seeds=2, rounds=2, sparsities=(0.5, 0.9), methods=("random",),
            ablations=("param", "param+grad", "param+synflow"), predictor_hidden=(8,), predictor_steps=10,
            predictor_batch_size=256, transfer_targets=("lenet300_100:gaussian",),
            variants=("allocation=irp,iterations=2,objective=rank", "features=param+synflow,allocation=erk"),
            irp_criterion="snip", irp_schedule="linear", gradient="train_set", predictor="mlp_bn")


def untrained_predictor(feature_set=autosparse.REFERENCE_FEATURES, descriptors=True) -> autosparse.PredictorState:
    """A predictor with random weights and unit standardization: scores some fixed function of the features."""
    width = autosparse.num_features(feature_set, descriptors)
    net = autosparse.ScoreNet((8,), 0)
    return autosparse.PredictorState(net.init(jax.random.key(3), jnp.zeros((1, 1, width))), jnp.zeros(width),
                                     jnp.ones(width), "mlp", (8,), feature_set, descriptors)


def tiny_config(**overrides):
    config = get_config()
    config.update({**TINY, **overrides})
    validate_common(config)
    experiment.validate(config)
    return config


def kernel_depths(model, x_shape) -> dict[str, int]:
    """{prunable kernel name: execution_order depth} from shapes only (jax.eval_shape)."""
    params, batch_stats = jax.eval_shape(lambda k: train.init_variables(model, k, jnp.zeros(x_shape[1:])),
                                         jax.random.key(0))
    batch_stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_stats)
    apply_fn = train.apply_fn_for(model, batch_stats)
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    depth = autosparse.execution_order(apply_fn, params, x)
    assert autosparse.execution_order(jax.jit(apply_fn), params, x) == depth  # read through a nested jit
    return dict(zip(masks.prunable_names(params), depth))


def test_depth_follows_execution_not_leaf_order():
    vgg = kernel_depths(models.create("vgg16", 10), (1, 32, 32, 3))
    assert vgg == {**{f"Conv_{i}/kernel": i for i in range(13)}, "Dense_0/kernel": 13}  # Conv_10 is 11th, not 3rd
    resnet = kernel_depths(models.create("resnet18", 10), (1, 32, 32, 3))
    assert resnet["Conv_0/kernel"] == 0 and resnet["Dense_0/kernel"] == len(resnet) - 1  # stem first, head last
    blocks = [(int(name.split("/")[0].split("_")[1]), depth) for name, depth in resnet.items() if "Block" in name]
    assert [b for b, _ in sorted(blocks, key=lambda bd: bd[1])] == sorted(b for b, _ in blocks)


class Reversed(nn.Module):
    """Two Dense layers whose names sort opposite to the order they run in."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="a_last")(nn.relu(nn.Dense(5, name="z_first")(x)))


def test_score_uses_execution_depth():
    model = Reversed()
    x, y = jax.random.normal(jax.random.key(0), (6, 4)), jnp.arange(6) % 3
    params = model.init(jax.random.key(1), x)["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    depth = autosparse.execution_order(apply_fn, params, x)
    assert masks.prunable_names(params) == ["a_last/kernel", "z_first/kernel"] and depth == (1, 0)
    grads = autosparse.init_gradients(apply_fn, params, (x, y))
    rows = autosparse.build_dataset(params, grads, jax.tree.map(lambda p: jnp.ones(p.shape, jnp.int32), params), 1,
                                    depth=depth)
    np.testing.assert_array_equal(rows["x"][:, 2], np.where(rows["layer"] == 0, 0.5, 0.0))  # depth / 2 layers
    state = untrained_predictor()
    scores = autosparse.score(state, apply_fn, params, (x, y), None)
    expected = [autosparse.predict(state, f.reshape(-1, 6)).reshape(f.shape[:-1])
                for f in autosparse.features(params, grads, depth=depth)]
    for s, e in zip(masks.prunable_leaves(scores, params), expected):
        assert_close_across_programs(s, e)


def test_select_features_picks_columns():
    rows = {"x": np.arange(14.0).reshape(2, 7), "y": np.zeros(2)}  # param, grad, synflow, 4 descriptors
    np.testing.assert_array_equal(autosparse.select_features(rows, ("grad",), False)["x"], [[1.0], [8.0]])
    np.testing.assert_array_equal(autosparse.select_features(rows, ("grad", "param"), True)["x"],
                                  [[1, 0, 3, 4, 5, 6], [8, 7, 10, 11, 12, 13]])
    np.testing.assert_array_equal(autosparse.select_features(rows, ("synflow",), False)["x"], [[2.0], [9.0]])
    with pytest.raises(ConfigError, match="columns"):
        autosparse.select_features({"x": np.zeros((2, 3))}, ("param",), False)


def test_autosparse_masks_hit_sparsity_exactly_through_masking():
    config = tiny_config()
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    predictor = autosparse.Pruner(untrained_predictor())
    sparsities = (0.5, 0.9, 0.973)
    stacked = masking.method_masks("autosparse", config, setup, seeds, sparsities, predictor=predictor)
    inverted = masking.method_masks("autosparse", config, setup, seeds, (0.5,), invert=True, predictor=predictor)
    one = jax.tree.map(lambda p: p[0], seeds.params)
    total = masks.count(masks.ones(one), one)[1]
    for s in sparsities:
        for seed in range(config.num_seeds):
            mask = jax.tree.map(lambda m: m[seed], stacked[s])
            assert int(masks.count(mask, one)[0]) == round((1 - s) * total)
            assert all(bool(m.all()) for m, keep in zip(jax.tree.leaves(mask), jax.tree.leaves(masks.prunable(one)))
                       if not keep)
    kept, flipped = (masks.prunable_leaves(m[0.5], seeds.params) for m in (stacked, inverted))
    assert not any(bool(jnp.any(a & b)) for a, b in zip(kept, flipped))  # half kept, the other half when inverted
    with pytest.raises(ConfigError, match="predictor"):
        masking.method_masks("autosparse", config, setup, seeds, (0.5,))


@pytest.fixture(scope="module")
def tiny_run(run_experiment):
    """(config, workdir, results, the prunable θ₀ [networks, n] of every network the comparisons trained)."""
    trained, train_mask_sets = [], masking.train_mask_sets

    def recording(config, setup, seeds, mask_sets):
        one = jax.tree.map(lambda p: p[0], seeds.params)
        trained.append(np.concatenate([np.asarray(k).reshape(k.shape[0], -1)
                                       for k in masks.prunable_leaves(seeds.params, one)], axis=1))
        return train_mask_sets(config, setup, seeds, mask_sets)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masking, "train_mask_sets", recording)
        return (*run_experiment(experiment, tiny_config()), trained)


def lin_ccc(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 2 * np.mean((a - a.mean()) * (b - b.mean())) / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)


def test_tiny_run_dataset_and_ccc(tiny_run):
    config, workdir, results, _ = tiny_run
    survival = np.load(os.path.join(workdir, "irp_survival.npz"))
    first, second = survival["first"], survival["second"]
    assert first.shape == second.shape and first.min() >= 0 and first.max() <= config.rounds
    expected = np.mean([lin_ccc(a / config.rounds, b / config.rounds) for a, b in zip(first, second)])
    assert_close_across_programs(results["ccc"], expected, rtol=1e-5)
    rows, source = autosparse.load_dataset(os.path.join(workdir, "autosparse_dataset.npz"))
    assert source["model"] == "mlp" and source["dataset"] == "gaussian" and source["rounds"] == config.rounds
    assert source["feature_columns"] == list(autosparse.FEATURES + autosparse.DESCRIPTORS)
    np.testing.assert_array_equal(rows["y"], (first.ravel() / config.rounds).astype(np.float32))
    params = common.init_seeds(common.setup(config)).params  # the same initial weights again
    theta = np.concatenate([np.asarray(k).reshape(config.num_seeds, -1) for k in masks.prunable_leaves(
        params, jax.tree.map(lambda p: p[0], params))], axis=1)
    np.testing.assert_array_equal(rows["x"][:, 0], theta.ravel())
    assert source["rows_per_seed"] == theta.shape[1]
    assert -1 <= results["prediction_spearman"] <= 1 and -1 <= results["prediction_spearman_within_layer"] <= 1


def test_tiny_run_tables_and_outputs(tiny_run):
    config, workdir, results, _ = tiny_run
    methods = (*config.methods, *learned_methods(config))
    assert [(r["method"], r["sparsity"]) for r in results["results"]] == [
        (m, s) for m in methods for s in config.sparsities]
    for table in ("results", "ablation", "transfer"):
        for r in results[table]:
            acc = np.asarray(r["test_accuracy"])
            assert acc.shape == (config.num_seeds,) and np.all((acc >= 0) & (acc <= 1))
    assert [(r["features"], r["sparsity"]) for r in results["ablation"]] == [
        (f, s) for f in config.ablations for s in config.sparsities]
    both = [r for r in results["ablation"] if r["features"] == "param+grad"]
    autos = [r for r in results["results"] if r["method"] == "autosparse"]
    assert [r["test_accuracy"].tolist() for r in both] == [r["test_accuracy"].tolist() for r in autos]
    assert {(r["target_model"], r["method"]) for r in results["transfer"]} == {("lenet300_100", m) for m in methods}
    for name in ("learning_tendencies.png", "accuracy_vs_sparsity.png",
                 "accuracy_vs_sparsity_lenet300_100_gaussian.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        tables = [json.loads(line)["table"] for line in f]
    trained = len(methods) * len(config.sparsities) * config.num_seeds
    assert tables.count("results") == trained and tables.count("transfer") == trained


def learned_methods(config) -> list[str]:
    return ["autosparse", *(f"autosparse[{v}]" for v in config.variants)]


def test_comparisons_train_only_held_out_initializations(tiny_run):
    """Every network behind results/transfer starts from weights the predictor never saw: its θ₀ is none of the
    source seeds' θ₀ (the dataset rows), and it is the held-out stream's initialization."""
    config, workdir, results, trained = tiny_run
    rows, _ = autosparse.load_dataset(os.path.join(workdir, "autosparse_dataset.npz"))
    source = rows["x"][:, 0].reshape(config.num_seeds, -1)
    held = common.init_seeds(experiment.held_out(common.setup(config)))
    expected = np.concatenate([np.asarray(k).reshape(config.num_seeds, -1) for k in masks.prunable_leaves(
        held.params, jax.tree.map(lambda p: p[0], held.params))], axis=1)
    same_model = [t for t in trained if t.shape[1] == source.shape[1]]
    assert len(same_model) == 1 and len(trained) == 1 + len(config.transfer_targets)
    for theta in same_model[0]:
        assert not any(np.array_equal(theta, s) for s in source)
    np.testing.assert_array_equal(same_model[0], np.tile(expected, (same_model[0].shape[0] // config.num_seeds, 1)))
    key_bytes = lambda keys: set(map(bytes, np.asarray(jax.random.key_data(keys))))  # noqa: E731
    assert not key_bytes(held.init_keys) & key_bytes(common.init_seeds(common.setup(config)).init_keys)
    comparisons = {(c["a"], c["b"], c["sparsity"]) for c in results["comparisons"]}
    assert comparisons == {(a, b, s) for a in learned_methods(config) for b in config.methods
                           for s in config.sparsities}
    by = {(r["method"], r["sparsity"]): np.asarray(r["test_accuracy"]) for r in results["results"]}
    for c in results["comparisons"]:
        np.testing.assert_allclose(c["mean_difference"], np.mean(by[c["a"], c["sparsity"]] - by[c["b"], c["sparsity"]]))
    for r in results["results"]:
        assert np.all(np.asarray(r["effective_density"]) <= np.asarray(r["density"]) + 1e-12)
        np.testing.assert_allclose(r["density"], 1 - r["sparsity"], atol=1 / source.shape[1])


@pytest.mark.parametrize("key, value, match", [
    ("predictor", "resnet", "predictor"),
    ("ablations", ("param+hessian",), "ablations"),
    ("feature_set", ("grad", "grad"), "feature_set"),
    ("transfer_targets", ("vgg16",), "transfer_targets"),
    ("num_seeds", 1, "num_seeds"),
    ("target_model", "alexnet", "target_model"),
    ("methods", ("snip", "autosparse"), "methods"),
    ("variants", ("allocation=erk,iterations=0",), "variants"),
    ("variants", ("scope=global",), "variants"),
    ("variants", ("features=param+hessian",), "variants"),
    ("autosparse_allocation", "layerwise", "autosparse_allocation"),
    ("irp_criterion", "grasp", "irp_criterion"),
    ("gradient", "hessian", "gradient"),
    ("predictor_objective", "huber", "predictor_objective"),
    ("irp_schedule", "cosine", "irp_schedule"),
])
def test_validate_rejects_bad_keys(key, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(**{key: value})


def test_cli_reports_bad_config_in_one_line(tmp_path):
    """Passes once the lead registers the experiment in jaxprune/experiments/__init__.py."""
    out = subprocess.run(
        [sys.executable, "-m", "jaxprune.main", "--config=configs/autosparse.py:paper", f"--workdir={tmp_path}/run",
         "--config.predictor=resnet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "config.predictor='resnet'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_paper_preset_is_the_reference_protocol_and_runs_tiny_on_mock_cifar(run_experiment):
    """The 'paper' preset (the GPU command in docs/autosparse.md) at a tiny size: its protocol options (SNIP IRP
    criterion, linear schedule to 1%, train-set gradient, BatchNorm MLP, CIFAR-10 -> CIFAR-100) with small MLPs in
    place of ResNet-18 / VGG-16 (whose CPU compile alone takes minutes), on TFDS mock data."""
    import tensorflow_datasets as tfds

    config = get_config("paper")
    assert (config.model, config.dataset, config.target_model, tuple(config.transfer_targets)) == (
        "resnet18", "cifar10", "vgg16", ("vgg16:cifar100",))
    assert (config.irp_criterion, config.irp_schedule, config.gradient, config.predictor) == (
        "snip", "linear", "train_set", "mlp_bn")
    assert tuple(config.predictor_hidden) == (16, 64, 1024, 1024, 64) and config.rounds == 20
    np.testing.assert_allclose((1 - config.prune_fraction) ** config.rounds, 0.01, rtol=2e-3)
    config.update(dict(model="mlp", widths=(8,), target_model="mlp", transfer_targets=("mlp:cifar100",), epochs=1,
                       rounds=2, batch_size=8, num_seeds=2, num_examples=32, num_test=8, pai_batches=1,
                       predictor_hidden=(4,), predictor_steps=5, predictor_batch_size=64, sparsities=(0.5, 0.9),
                       methods=("random",), ablations=(), variants=(), eval_batch_size=8))
    validate_common(config)
    with pytest.MonkeyPatch.context() as patch, tfds.testing.mock_data(num_examples=48):
        patch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
        patch.setattr(tfds.core.DatasetInfo, "available_file_formats",
                      lambda self: {tfds.core.file_adapters.FileFormat.ARRAY_RECORD})
        config, workdir, results = run_experiment(experiment, config)
    _, source = autosparse.load_dataset(os.path.join(workdir, "autosparse_dataset.npz"))
    assert (source["dataset"], source["irp_criterion"], source["irp_schedule"]) == ("cifar10", "snip", "linear")
    assert "whole training set" in source["gradient"] and results["target"]["dataset"] == "cifar10"
    assert {r["target_dataset"] for r in results["transfer"]} == {"cifar100"}
    assert {r["method"] for r in results["results"]} == {"random", "autosparse"}


def test_within_layer_spearman_ignores_the_order_between_layers():
    """Predictions that order the layers right and every layer backwards: pooled ρ > 0.5, within-layer ρ = −1; a
    layer of constant survival (ρ undefined) is left out."""
    rows = {"layer": np.array([0, 0, 0, 1, 1, 1, 2, 2]), "y": np.array([0.0, 0.1, 0.2, 0.6, 0.7, 0.8, 0.5, 0.5])}
    predicted = np.array([0.2, 0.1, 0.0, 0.8, 0.7, 0.6, 0.4, 0.3])
    assert float(stats.spearman(predicted, rows["y"])) > 0.5
    assert experiment.within_layer_spearman(predicted, rows) == pytest.approx(-1.0)


def test_the_predictor_key_is_no_seeds_key_and_the_gradient_batch_is_not_drawn_with_the_init_key():
    keys = jax.random.key_data(common.seed_keys(0, 4096))
    predictor = jax.random.key_data(experiment.predictor_key(0))
    assert not np.any(np.all(keys == predictor, axis=1))  # fold_in(key(0), 1), the key it had, is seed 1's
    config = tiny_config()
    setup = common.setup(config)
    init_key = common.init_and_data_keys(setup.keys)[0][0]
    x, _ = experiment.gradient_batch(config, setup, init_key)
    scored_by_snip = masking.scoring_batches(setup.train_data, jax.random.split(jax.random.fold_in(init_key, 1))[0],
                                             config.pai_batches, config.batch_size)[0]
    with_init_key = masking.scoring_batches(setup.train_data, init_key, config.pai_batches, config.batch_size)[0]
    np.testing.assert_array_equal(x, scored_by_snip.reshape(x.shape))
    assert not np.array_equal(x, with_init_key.reshape(x.shape))
