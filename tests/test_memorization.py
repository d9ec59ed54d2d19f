"""Memorization: random labels, the convergence rule (hand-made sequences, per-seed freezing), a tiny run, the CLI."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import memorization as memorization_config
from jaxprune import masks, train
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import memorization as mem
from tests.test_data import prepared_tfds  # noqa: F401  (fixture: mocked TFDS records)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(num_examples=128, num_test=16, input_dim=8, num_classes=4, widths=(16,), num_seeds=2, epochs=2,
            batch_size=32, max_epochs=6, min_epochs=0, synflow_rounds=2,
            methods=("imp", "magnitude_after", "magnitude_after_no_rewind", "snip", "random"), sparsities=(0.5, 0.8),
            prune_fraction=0.5)


def tiny_config(**overrides):
    c = memorization_config.get_config()
    c.update(TINY | overrides)
    return c


def test_random_labels_are_fixed_by_data_seed_uniform_and_independent_of_x():
    config = tiny_config(num_examples=2000, num_test=2000, input_dim=4)
    a, b = mem.random_label_dataset(config), mem.random_label_dataset(config)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_train, mem.random_label_dataset(tiny_config(data_seed=1)).y_train)
    counts = np.bincount(a.y_train, minlength=4)
    assert np.sum((counts - 500) ** 2 / 500) < 16.3  # chi-square, 3 dof: p = 0.001

    def nearest_neighbour_accuracy(ds):  # 1-NN from train to test: chance (1/K) iff labels ignore x
        d2 = ((ds.x_test[:, None] - ds.x_train[None]) ** 2).sum(-1)
        return np.mean(ds.y_train[d2.argmin(1)] == ds.y_test)

    assert abs(nearest_neighbour_accuracy(a) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 2000)
    teacher = mem.data.load(tiny_config(num_examples=2000, num_test=2000, input_dim=4, labels="teacher"))
    assert nearest_neighbour_accuracy(teacher) > 0.5  # the same probe detects labels that depend on x


def test_real_datasets_get_every_training_label_redrawn():
    config = tiny_config(dataset="mnist1d", num_examples=1000, num_test=100)
    ds = mem.random_label_dataset(config)
    assert ds.corrupted.all()
    assert abs(np.mean(ds.y_train == ds.clean_y_train) - 0.1) < 0.04  # agrees with the true class by chance only
    np.testing.assert_array_equal(ds.y_train, mem.random_label_dataset(config).y_train)


def first_stop(rule, losses, accuracies, max_epochs=12):
    pad = lambda v: jnp.pad(jnp.asarray(v, jnp.float32), (0, max_epochs - len(v)), constant_values=jnp.nan)  # noqa
    for e in range(1, len(losses) + 1):
        if mem.should_stop(rule, pad(losses), pad(accuracies), jnp.int32(e)):
            return e
    return None


def test_convergence_rule_on_hand_made_sequences():
    rule = mem.StopRule(loss_tol=0.01, loss_window=1, accuracy_patience=3, accuracy_tol=0.0)  # the paper's rule
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # Loss moves by 0.5, 0.3, 0.005: stop after epoch 4.
    assert first_stop(rule, [2.0, 1.5, 1.2, 1.195, 1.0, 0.8, 0.6], rising) == 4
    # Loss moves by 0.1 every epoch; accuracy equals A_3 at epochs 4, 5, 6: flat for 3 epochs after epoch 6.
    steady = [2.0 - 0.1 * e for e in range(7)]
    assert first_stop(rule, steady, [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4]) == 6
    assert first_stop(rule, steady, [0.1, 0.2, 0.3, 0.3, 0.3, 0.31, 0.31]) is None  # two flat epochs only
    assert first_stop(rule._replace(accuracy_tol=0.02), steady, [0.1, 0.2, 0.3, 0.3, 0.3, 0.31, 0.31]) == 6
    assert first_stop(rule._replace(accuracy_patience=0), steady, [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4]) is None
    assert first_stop(rule, steady, rising) is None
    # Over a window of 3 epochs: |L_e − L_{e−3}| = 0.009 first at e = 6 (1.0 → 0.991); not before min_epochs.
    slow = [2.0, 1.5, 1.0, 0.998, 0.995, 0.991, 0.99]
    assert first_stop(rule._replace(loss_window=3), slow, rising) == 6
    assert first_stop(rule, slow, rising) == 4
    assert first_stop(rule._replace(min_epochs=5), slow, rising) == 5


def test_interpolation_reading_waits_for_the_loss_level_not_its_change():
    rule = mem.StopRule(loss_tol=0.01, loss_window=1, accuracy_patience=3, accuracy_tol=0.0, reading="interpolation")
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # A plateau at 1.0 (capacity-limited): 'plateau' stops at epoch 4, 'interpolation' never.
    stuck = [2.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert first_stop(rule._replace(reading="plateau"), stuck, rising) == 4
    assert first_stop(rule, stuck, rising) is None
    # Loss reaches 0.01 at epoch 5 (<= tol, inclusive) while still moving by 0.09 per epoch.
    falling = [0.37, 0.28, 0.19, 0.1, 0.01, 0.005, 0.001]
    assert first_stop(rule, falling, rising) == 5
    assert first_stop(rule._replace(loss_tol=0.0099), falling, rising) == 6
    # The accuracy clause is OR'ed in: flat accuracy A_3 = A_4 = A_5 = A_6 stops at 6 whatever the loss.
    assert first_stop(rule, stuck, [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.4]) == 6
    assert first_stop(rule._replace(min_epochs=6), falling, rising) == 6


def test_vmapped_training_freezes_each_seed_at_its_own_stopping_epoch():
    config = tiny_config(num_examples=64, batch_size=16, labels="teacher", learning_rate=0.01)
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    dense = jax.vmap(masks.ones)(seeds.params)
    sparse = jax.vmap(lambda p: masks.from_scores(jax.tree.map(jnp.abs, p), p, 0.97))(seeds.params)
    # Seed 0 dense, seed 1 nearly empty: its loss flattens at once, the dense one's keeps falling (teacher labels).
    grid = jax.tree.map(lambda d, s: jnp.stack([d[0], s[1]]), dense, sparse)
    tx = train.optimizer_from_config(config, 4)

    def fit(rule):
        return jax.jit(lambda p, bs, m, k: mem.train_until_converged(
            jax.vmap(lambda p, bs, m: train.init_state(masks.apply(p, m), bs, tx))(p, bs, m), m, setup.train_data,
            k, model=setup.model, tx=tx, batch_size=16, max_epochs=30, rule=rule))

    rule = mem.StopRule(0.02, 1, 3, 0.0)
    states, history, epochs, converged = fit(rule)(seeds.params, seeds.batch_stats, grid, seeds.order_keys)
    assert epochs[0] != epochs[1] and all(1 < e < 30 for e in epochs) and converged.all()
    # Loss 0 is never reached: under 'interpolation' both nets run to the cap and are flagged as not converged.
    capped = fit(mem.StopRule(0.0, 1, 0, 0.0, reading="interpolation"))(seeds.params, seeds.batch_stats, grid,
                                                                       seeds.order_keys)
    assert (np.asarray(capped.epochs) == 30).all() and not np.asarray(capped.converged).any()
    for i in range(2):
        e = int(epochs[i])
        assert np.isfinite(history["loss"][i, :e]).all() and np.isnan(history["loss"][i, e:]).all()
        assert mem.should_stop(rule, history["loss"][i], history["accuracy"][i], e)
        m = jax.tree.map(lambda x: x[i], grid)
        p = masks.apply(jax.tree.map(lambda x: x[i], seeds.params), m)
        reference, _, _ = train.train(train.init_state(p, {}, tx), m, setup.train_data, seeds.order_keys[i],
                                      model=setup.model, tx=tx, epochs=e, batch_size=16)
        for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(reference.params)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_run(run_experiment):
    return run_experiment(mem, tiny_config(methods=(*TINY["methods"], "magnitude")))


def test_tiny_run_reports_every_method_sparsity_and_seed(tiny_run):
    config, workdir, results = tiny_run
    cells = {(r["method"], r["sparsity"]) for r in results["results"]}
    controls = {f"{m}+{a}" for m in config.methods if m != "random" for a in ("shuffle", "swap", "rewire")}
    assert cells == {("dense", 0.0)} | {(m, s) for m in (*config.methods, *controls) for s in config.sparsities}
    # 8·16 + 16·4 kernel weights, 16 + 4 biases: ‖m‖₀ = round((1 − s) · 192) + 20.
    for r in results["results"]:
        assert r["p_eff_density_term"] == round((1 - r["sparsity"]) * 192) + 20 and r["p_eff_mi_term"] is None
        acc, epochs, capped = np.asarray(r["train_accuracy"]), np.asarray(r["epochs"]), np.asarray(r["hit_cap"])
        assert acc.shape == epochs.shape == capped.shape == (2,) and ((0 <= acc) & (acc <= 1)).all()
        assert ((1 <= epochs) & (epochs <= config.max_epochs)).all() and (capped <= (epochs == config.max_epochs)).all()
        assert (np.asarray(r["lipschitz_input_gradient"]) <= np.asarray(r["lipschitz_spectral_bound"]) * 1.0001).all()
        assert np.allclose(r["density"], 1 - r["sparsity"], atol=0.01) and (r["robustness_scale"] is None) == (
            r["robustness_note"] is not None)
    rows = {(r["method"], r["sparsity"]): r for r in results["results"]}
    for m, s in cells:  # shuffle and rewire keep every layer's density of every seed exactly
        method, _, control = m.partition("+")
        if control in ("shuffle", "rewire"):
            assert rows[m, s]["layer_density"] == rows[method, s]["layer_density"]
        mixing = rows[m, s].get("rewire_mixing")
        assert (mixing is not None) == (control == "rewire")
        if mixing:  # the chains' overlap with the start, per layer, seed and checkpoint
            assert set(mixing) == {"Dense_0/kernel", "Dense_1/kernel"}
            assert np.shape(mixing["Dense_0/kernel"]["overlap"]) == (2, 8)
    # The data-independent magnitude finds the same mask on D': the swap row is the same nets, A − A+swap exactly 0.
    for s in config.sparsities:
        for key in ("train_accuracy", "train_loss", "epochs"):
            np.testing.assert_array_equal(rows["magnitude+swap", s][key], rows["magnitude", s][key])
        assert next(c["mean_difference"] for c in results["comparisons"]
                    if (c["a"], c["b"], c["sparsity"]) == ("magnitude", "magnitude+swap", s)) == 0.0
    assert results["num_capped"] == sum(np.sum(r["hit_cap"]) for r in results["results"])
    assert {(c["a"], c["b"]) for c in results["comparisons"]} >= {
        ("imp", "imp+shuffle"), ("imp", "imp+swap"), ("imp", "imp+rewire"), ("imp", "snip"), ("imp", "random"),
        ("snip", "snip+shuffle"), ("snip", "snip+swap")}
    c = next(c for c in results["comparisons"] if (c["a"], c["b"], c["sparsity"]) == ("imp", "snip", 0.8))
    d = np.asarray(rows["imp", 0.8]["train_accuracy"]) - np.asarray(rows["snip", 0.8]["train_accuracy"])
    assert c["mean_difference"] == pytest.approx(d.mean()) and c["num_pairs"] == 2
    assert results["dense_at_pruning"]["epochs"].shape == (2,)
    assert [r["density"] for r in results["imp_rounds"]] == [0.5, pytest.approx(0.25), pytest.approx(0.2)]
    np.testing.assert_array_equal(results["imp_rounds"][-1]["train_accuracy"], rows["imp", 0.8]["train_accuracy"])
    assert {"memorization_vs_density.png", "paired_differences.png", "metrics.jsonl"} <= set(os.listdir(workdir))
    assert [o["sparsity"] for o in results["ordering"]] == list(config.sparsities)


def test_shuffle_control_keeps_layer_counts_and_moves_the_weights():
    config = tiny_config()
    setup = common.setup(config, mem.random_label_dataset(config))
    seeds = common.init_seeds(setup)
    imp_like = {0.8: jax.vmap(lambda p: masks.largest_magnitude(p, 0.8))(seeds.params)}
    shuffled = masking.shuffled(setup, seeds, imp_like)[0.8]
    for a, b in zip(jax.tree.leaves(imp_like[0.8]), jax.tree.leaves(shuffled)):
        a, b = np.asarray(a).reshape(2, -1), np.asarray(b).reshape(2, -1)
        np.testing.assert_array_equal(a.sum(1), b.sum(1))
        if a.shape[1] > 20 and 0 < a.mean() < 1:  # a kernel: positions change
            assert (a != b).any(axis=1).all()


@pytest.mark.parametrize("labels,label_noise", [("random", 0.0), ("teacher", 0.5)])
def test_swap_draws_the_random_labels_again_and_keeps_the_rest_of_the_data(labels, label_noise):
    config = tiny_config(num_examples=4000, labels=labels, label_noise=label_noise)
    d = mem.random_label_dataset(config)
    swapped = mem.redrawn_dataset(config, d)
    for key in ("x_train", "x_test", "y_test", "clean_y_train", "corrupted"):
        np.testing.assert_array_equal(getattr(swapped, key), getattr(d, key))
    random = d.corrupted if label_noise else np.ones(4000, bool)
    np.testing.assert_array_equal(swapped.y_train[~random], d.y_train[~random])  # the labels that are not random
    same, n = np.sum(swapped.y_train[random] == d.y_train[random]), random.sum()
    assert abs(same / n - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)  # independent uniform draws agree with prob. 1/K
    counts = np.bincount(swapped.y_train[random], minlength=4)
    assert np.sum((counts - n / 4) ** 2 / (n / 4)) < 16.3  # uniform (chi-square, 3 dof, p = 0.001)


def test_swap_keeps_init_and_data_order_and_data_independent_methods_find_the_same_mask():
    config = tiny_config(synflow_rounds=2)
    d = mem.random_label_dataset(config)
    setup = common.setup(config, d)
    swap_setup = masking.swap_setup(setup, mem.redrawn_dataset(config, d))
    np.testing.assert_array_equal(swap_setup.train_data.x, setup.train_data.x)
    assert not np.array_equal(swap_setup.train_data.y, setup.train_data.y)
    assert swap_setup.test_data is setup.test_data and swap_setup.mesh is setup.mesh
    seeds, swap_seeds = common.init_seeds(setup), common.init_seeds(swap_setup)  # same θ₀ and data-order keys
    for a, b in zip(jax.tree.leaves((seeds.params, seeds.batch_stats)),
                    jax.tree.leaves((swap_seeds.params, swap_seeds.batch_stats))):
        np.testing.assert_array_equal(a, b)
    for a, b in ((seeds.init_keys, swap_seeds.init_keys), (seeds.order_keys, swap_seeds.order_keys)):
        np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
    for method in ("synflow", "snip"):
        own = masking.method_masks(method, config, setup, seeds, config.sparsities)
        swapped = masking.method_masks(method, config, swap_setup, seeds, config.sparsities)
        equal = all(np.array_equal(a, b) for s in config.sparsities
                    for a, b in zip(jax.tree.leaves(own[s]), jax.tree.leaves(swapped[s])))
        assert equal == (method == "synflow"), method  # SNIP scores on the labels: its masks move


def test_no_rewind_trains_on_from_the_pruned_trained_weights(tiny_run):
    config, _, results = tiny_run
    rows = {(r["method"], r["sparsity"]): r for r in results["results"]}
    for s in config.sparsities:  # same masks as magnitude_after, other starting weights: other fits
        assert rows["magnitude_after_no_rewind", s]["layer_density"] == rows["magnitude_after", s]["layer_density"]
        assert not np.array_equal(rows["magnitude_after_no_rewind", s]["train_loss"],
                                  rows["magnitude_after", s]["train_loss"])


@pytest.mark.parametrize("key,value,needle", [("labels", "teacher", "labels"), ("label_noise", 0.2, "label_noise"),
                                              ("methods", ("snip", "foo"), "methods"), ("loss_tol", -1.0, "loss_tol"),
                                              ("loss_window", 0, "loss_window"), ("min_epochs", -1, "min_epochs"),
                                              ("lr_schedule", "cosine", "lr_schedule"), ("task", "regression", "task"),
                                              ("stop_rule", "forever", "stop_rule"),
                                              ("ablations", ("flip",), "ablations"),
                                              ("rewire_swaps_per_edge", 0, "rewire_swaps_per_edge"),
                                              ("rewind_step", 3, "rewind_step"), ("accuracy_patience", -1, "accuracy")])
def test_validation_names_the_key(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        mem.validate(tiny_config(**{key: value}))


def test_swap_is_refused_where_no_label_is_random():
    with pytest.raises(ConfigError, match="'swap' draws the random labels again"):
        mem.validate(tiny_config(dataset="mnist1d", keep_labels=True))


def test_rewire_on_a_conv_net_is_refused_naming_the_supported_models():
    with pytest.raises(ConfigError, match="'rewire' is defined for Dense kernels only \\(models mlp, lenet300_100\\)"):
        mem.validate(tiny_config(model="conv4"))
    mem.validate(tiny_config(model="conv4", ablations=("shuffle", "swap")))


def test_cli_writes_results(tmp_path):
    """Passes once ``memorization`` is registered in jaxprune/experiments/__init__.py."""
    args = [f"--config.{k}={v}" for k, v in TINY.items() if k != "methods"] + [
        "--config.methods=('snip','random')", "--config.ablations=('shuffle','swap','rewire')"]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxprune.main", "--config=configs/memorization.py",
                           f"--workdir={tmp_path / 'run'}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.load(open(tmp_path / "run" / "results.json"))
    assert len(results["results"]) == 1 + 5 * len(TINY["sparsities"])  # snip and its 3 controls, random
    bad = subprocess.run([sys.executable, "-m", "jaxprune.main", "--config=configs/memorization.py",
                          f"--workdir={tmp_path / 'bad'}", "--config.ablations=('shuffle','flip')"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "ablations" in bad.stderr
    assert not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("panel", [
    dict(dataset="fashion_mnist", model="mlp", widths=(16,)),  # Fig. 1b: the paper's MLP, every label random
    # Fig. 1c's data: CIFAR-10 with label noise (its conv net is left out here: compiling the converging loop of a
    # conv net takes minutes on CPU; the loop is model-generic and conv training is tested in test_pai/test_irp).
    dict(dataset="cifar10", model="mlp", widths=(16,), label_noise=0.5),
])
@pytest.mark.usefixtures("prepared_tfds")
def test_paper_panels_run_at_tiny_size_and_split_noisy_from_clean_labels(run_experiment, panel):
    config = tiny_config(**panel, num_examples=0, num_test=8, methods=("random",), sparsities=(0.5,), max_epochs=2,
                         batch_size=16, ablations=())
    _, _, results = run_experiment(mem, config)
    assert results["num_examples"] == 48 and len(results["results"]) == 2
    for r in results["results"]:
        if panel.get("label_noise"):  # 24 of 48 labels re-drawn: the accuracy splits into the two halves exactly
            np.testing.assert_allclose(r["train_accuracy"], (r["noisy_fitted"] + r["clean_fitted"]) / 2, atol=1e-6)
        else:
            assert "noisy_fitted" not in r
    assert results["dense_at_pruning"] is None  # no after-training method: the dense net trains with the others
