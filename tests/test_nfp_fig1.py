"""No Free Prune Fig. 1: the memorized criterion, input noise, PyTorch's default init, failed nets, the carried
optimizer state of magnitude_after_no_rewind, and the Fig. 1b preset at tiny size on mock Fashion-MNIST."""
import importlib
import json
import math
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import nfp_fig1a, nfp_fig1b
from jaxprune import data, masks, models, train
from jaxprune.errors import ConfigError
from jaxprune.experiments import common
from jaxprune.experiments import memorization as mem
from tests.conftest import assert_close_across_programs
from tests.test_data import prepared_tfds  # noqa: F401  (fixture: mocked TFDS records)
from tests.test_memorization import tiny_config

THRESHOLD = math.log(2) / 10


def test_memorized_counts_a_point_only_at_cross_entropy_at_most_log2_over_10():
    # Two classes, logits (a, 0): cross-entropy of class 0 is log(1 + e^−a) = THRESHOLD at a* = −log(2^(1/10) − 1).
    edge = -math.log(2 ** 0.1 - 1)
    logits = jnp.array([[edge - 1e-3, 0.0], [edge + 1e-3, 0.0], [0.04, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = jnp.array([0, 0, 0, 0, 0])
    got = np.asarray(mem.memorized_points(logits, labels, THRESHOLD))
    np.testing.assert_array_equal(got, [False, True, False, True, False])  # 51/49 (logit 0.04) is not memorized
    assert np.asarray(jnp.argmax(logits, -1) == labels)[2]  # ...though its argmax is right
    ten = jax.random.normal(jax.random.key(0), (64, 10)) * 4  # 10 classes: against −log softmax written out
    y = jnp.arange(64) % 10
    ce = -np.log(np.exp(np.asarray(ten, np.float64)[np.arange(64), y]) / np.exp(np.asarray(ten, np.float64)).sum(1))
    np.testing.assert_array_equal(mem.memorized_points(ten, y, 0.5), ce <= 0.5)


def test_input_noise_changes_the_inputs_only_reproducibly_with_its_variance():
    base = dict(dataset="gaussian", num_examples=3000, num_test=500, input_dim=10)
    clean, noisy = data.load(base), data.load(base | {"input_noise_var": 2.0})
    again = data.load(base | {"input_noise_var": 2.0})
    other = data.load(base | {"input_noise_var": 2.0, "data_seed": 1})
    np.testing.assert_array_equal(noisy.x_train, again.x_train)
    np.testing.assert_array_equal(noisy.y_train, clean.y_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    for split in ("x_train", "x_test"):
        eps = (getattr(noisy, split) - getattr(clean, split)).astype(np.float64) / math.sqrt(2.0)
        assert stats.kstest(eps.ravel(), "norm").pvalue > 1e-3  # the added noise is N(0, 2) per entry
    assert not np.array_equal(other.x_train - data.load(base | {"data_seed": 1}).x_train, noisy.x_train - clean.x_train)
    per_seed = dict(base, num_examples=100, num_test=10, data_per_seed=True)
    key = data.data_keys(0, [0])[0]
    a, b = data.draw(key, per_seed), data.draw(key, per_seed | {"input_noise_var": 2.0})
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert float(np.var(np.asarray(b.x_train - a.x_train))) == pytest.approx(2.0, rel=0.1)
    with pytest.raises(ConfigError, match="input_noise_var"):
        data.load(base | {"input_noise_var": -1.0})


def test_torch_default_init_is_uniform_within_one_over_sqrt_fan_in():
    model = models.create("mlp", 3, widths=(400, 300), weight_init="torch_default")
    params, _ = train.init_variables(model, jax.random.key(0), jnp.zeros(50))
    for name, fan_in in (("Dense_0", 50), ("Dense_1", 400), ("Dense_2", 300)):
        bound = 1 / math.sqrt(fan_in)
        for leaf in ("kernel", "bias"):
            w = np.asarray(params[name][leaf], np.float64).ravel()
            assert np.abs(w).max() <= bound and (w.size < 100 or np.abs(w).max() > 0.95 * bound), (name, leaf)
            if w.size > 1000:  # U(−b, b): the KS test against that law
                assert stats.kstest(w, "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3, (name, leaf)
    he = train.init_variables(models.create("mlp", 3, widths=(400, 300)), jax.random.key(0), jnp.zeros(50))[0]
    assert not np.asarray(he["Dense_0"]["bias"]).any()  # the default stays He normal with zero biases
    with pytest.raises(ConfigError, match="weight_init"):
        models.create("conv2", 3, weight_init="torch_default")


def test_no_rewind_carries_the_dense_optimizer_state_when_asked():
    config = tiny_config(num_examples=64, batch_size=16, max_epochs=2, no_rewind_optimizer="carry")
    setup = common.setup(config, mem.random_label_dataset(config))
    seeds = common.init_seeds(setup)
    ones = jax.vmap(masks.ones)(seeds.params)
    dense = mem.cell(mem.train_all(config, setup, seeds, [ones], max_epochs=2, rule=None, keep_params=True,
                                   keep_opt_state=True), 0)
    carried = mem.cell(mem.train_all(config, setup, seeds, [ones], max_epochs=1, rule=None, keep_params=True,
                                     starts=[(dense["params"], dense["opt_state"])]), 0)
    tx = train.optimizer_from_config(config, 4)
    for i in range(2):  # reference: one epoch of train_steps from the dense weights AND its Adam state (a fresh
        # state moves the weights elsewhere: Adam's first step is ±lr per weight, the carried one is not)
        one = lambda tree: jax.tree.map(lambda a: jnp.asarray(a[i]), tree)  # noqa: E731
        state = train.TrainState(one(dense["params"]), {}, one(dense["opt_state"]), jnp.int32(0), jnp.int32(-1))
        ref, _, _ = train.train_steps(state, one(ones), setup.train_data, seeds.order_keys[i], 0, model=setup.model,
                                      tx=tx, num_steps=4, batch_size=16)
        for a, b in zip(jax.tree.leaves(one(carried["params"])), jax.tree.leaves(ref.params)):
            assert_close_across_programs(a, b)


def test_a_diverging_net_is_flagged_frozen_and_left_out(run_experiment):
    config = tiny_config(methods=("random",), sparsities=(0.5,), ablations=(), learning_rate=1e20, max_epochs=4)
    _, _, results = run_experiment(mem, config)
    assert results["num_failed"] == 4 and results["num_capped"] == 0
    for r in results["results"]:
        assert r["failed_seeds"] == [0, 1] and (np.asarray(r["failed_step"]) >= 0).all()
        assert np.isnan(np.asarray(r["memorized"], np.float64)).all() and not np.asarray(r["hit_cap"]).any()
        assert (np.asarray(r["epochs"]) < config.max_epochs).all()  # stopped at the failing epoch
    assert all(c["num_pairs"] == 0 for c in results["comparisons"])


@pytest.mark.usefixtures("prepared_tfds")
def test_fig1b_preset_runs_at_tiny_size_on_mock_fashion_mnist(run_experiment):
    config = nfp_fig1b.get_config()
    config.update(widths=(16,), num_seeds=2, batch_size=16, num_test=8, sparsities=(0.97, 0.99), max_epochs=3,
                  synflow_rounds=2, prune_fraction=0.7)  # IMP in 4 rounds, not 21
    _, workdir, results = run_experiment(mem, config)
    assert results["num_examples"] == 48 and results["num_classes"] == 10
    assert {r["method"] for r in results["results"]} == {"dense", *config.methods}
    for r in results["results"]:
        for key in ("memorized", "train_accuracy", "epochs", "hit_cap"):
            assert np.shape(r[key]) == (2,), (r["method"], key)
        assert (np.asarray(r["memorized"]) <= np.asarray(r["train_accuracy"]) + 1e-6).all()
    assert {(c["a"], c["b"]) for c in results["comparisons"]} >= {("imp", "snip"), ("imp", "random")}
    assert results["metric"] == "train_accuracy"


@pytest.mark.parametrize("overrides,needle", [
    (dict(memorized_loss_max=0.0), "memorized_loss_max"), (dict(memorized_loss_max=-1.0), "memorized_loss_max"),
    (dict(memorization_metric="loss"), "memorization_metric"),
    (dict(no_rewind_optimizer="keep"), "no_rewind_optimizer"), (dict(keep_labels=True), "keep_labels"),
])
def test_bad_memorization_keys_are_named(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        mem.validate(tiny_config(**overrides))


def test_fig1a_preset_is_the_papers_protocol():
    c = nfp_fig1a.get_config()
    assert (c.num_examples, c.input_dim, c.num_classes, c.num_seeds, c.learning_rate) == (30, 30, 2, 250, 1e-2)
    assert c.data_per_seed and c.memorization_metric == "memorized" and c.memorized_loss_max == THRESHOLD
    assert set(c.methods) == {"imp", "snip", "random", "synflow", "grasp"}
    np.testing.assert_allclose(c.sparsities[3], 1 - 0.8 ** 14, atol=1e-6)  # r = 14: 0.956
    assert {round(s, 3) for s in c.sparsities} >= {0.956, 0.972, 0.993}
    mem.validate(c)


def test_fig1a_benchmark_smoke_prints_positive_rates(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    importlib.import_module("bench_nfp_fig1a").main(["--smoke"])
    row = capsys.readouterr().out.split("|---|")[-1].splitlines()[1].strip("|").split("|")
    assert row[0].strip() == "4" and float(row[2].split()[0]) > 0 and float(row[3].split()[0]) > 0


def test_fig1_table_against_pairs_the_shared_seed_ids_and_drops_failed_seeds(tmp_path, capsys):
    """``scripts/nfp_fig1_table.py --against``: this run − BASE over the seed ids both have, a failed seed of
    either side left out, against the t interval computed here from the same pairs."""
    def write(name, seed_ids, values, failed):
        row = {"method": "imp", "sparsity": 0.956, "memorized": values, "epochs": [30] * len(values),
               "failed_seeds": failed}
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"metric": "memorized", "num_seeds": len(values), "seed_ids": seed_ids, "results": [row],
             "comparisons": []}))

    write("alt", [0, 1, 2, 3, 4], [1.0, 0.9, 0.5, 0.7, 0.2], failed=[4])  # seed id 4 failed here
    write("base", [2, 3, 0, 1, 5, 4], [0.4, 0.1, 0.8, 0.8, 0.0, 0.0], failed=[])
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "nfp_fig1_table.py"), run_name="x")["main"](
        [str(tmp_path / "alt"), "--sparsities", "0.956", "--against", str(tmp_path / "base")])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| imp | +")][0]
    d = np.array([1.0, 0.9, 0.5, 0.7]) - np.array([0.8, 0.8, 0.4, 0.1])  # seed ids 0–3 in both
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert line == f"| imp | {d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}], n=4: inconclusive |"
