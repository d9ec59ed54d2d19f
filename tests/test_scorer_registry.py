"""The scorer registry: built-ins registered through it, a user's scorer usable everywhere a built-in is (score,
prune, every experiment's validation, a config file run by the CLI), and the registrations it refuses."""
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_across_programs

from jaxprune import masks, pai
from jaxprune.errors import ConfigError
from jaxprune.experiments import REGISTRY, masking

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILT_INS = ("random", "magnitude", "snip", "grasp", "synflow", "iterative_snip", "force", "prospr", "npb")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test registers into a copy of the registry, so no registration leaks into other tests."""
    monkeypatch.setattr(pai, "_SCORERS", dict(pai._SCORERS))


def abs_theta(apply_fn, params, batches, key, options):
    return jax.tree.map(jnp.abs, params)


def mlp():
    """(apply_fn, params, batches [1, 6, 4]) of a 4-5-3 MLP with N(0, 1) weights."""
    rng = np.random.default_rng(0)
    params = {"Dense_0": {"kernel": rng.normal(size=(4, 5)), "bias": rng.normal(size=5)},
              "Dense_1": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=3)}}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)

    def apply_fn(p, x):
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]

    batches = (jnp.asarray(rng.normal(size=(1, 6, 4)), jnp.float32), jnp.asarray(rng.integers(0, 3, (1, 6))))
    return apply_fn, params, batches


def test_the_built_ins_are_registered_first():
    assert pai.methods() == BUILT_INS
    assert masking.methods() == BUILT_INS + masking.AFTER_TRAINING


def test_a_registered_scorer_scores_and_prunes_like_the_built_in_it_copies():
    apply_fn, params, batches = mlp()
    pai.register("abs_theta", abs_theta)
    assert pai.methods() == (*BUILT_INS, "abs_theta") and "abs_theta" in masking.methods()
    batch = jax.tree.map(lambda a: a[0], batches)
    got = pai.score("abs_theta", apply_fn, params, batch, jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, got, pai.score("magnitude", apply_fn, params, batch, jax.random.key(0)))
    assert np.all(np.asarray(got["Dense_0"]["bias"]) == 0)  # off the prunable leaves: 0, as for the built-ins
    prune = jax.jit(lambda method, s: pai.prune(method, apply_fn, params, batches, jax.random.key(0), s, rounds=2),
                    static_argnums=0)
    for sparsity in (0.6, 0.8):  # 14 and 7 of the 35 kernel weights kept
        mask, expected = prune("abs_theta", sparsity), prune("magnitude", sparsity)
        jax.tree.map(np.testing.assert_array_equal, mask, expected)
        assert masks.count(mask, params)[0] == round((1 - sparsity) * 35)


def test_a_scorer_gets_the_batches_key_and_options():
    apply_fn, params, batches = mlp()
    seen = {}

    def spy(apply_fn_, params_, batches_, key, options):
        seen.update(batches=batches_, key=key, temperature=options.temperature, out=apply_fn_(params_, batches_[0][0]))
        return abs_theta(apply_fn_, params_, batches_, key, options)

    pai.register("spy", spy)
    pai.score("spy", apply_fn, params, jax.tree.map(lambda a: a[0], batches), jax.random.key(7),
              options=pai.ScoringOptions(temperature=3.0))
    jax.tree.map(np.testing.assert_array_equal, seen["batches"], batches)  # one batch: a leading axis of 1
    np.testing.assert_array_equal(seen["out"], apply_fn(params, batches[0][0]))
    assert seen["temperature"] == 3.0
    np.testing.assert_array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(jax.random.key(7)))


# Experiments that run no registered scorer: the toy's methods are its own float64-checked implementations
# (jaxprune.toy), and the noise-correlation curve prunes by IMP only.
OWN_METHODS = ("toy_mutual_information", "noise_correlation_curve")


def test_registered_names_pass_every_experiments_method_validation():
    pai.register("abs_theta", abs_theta)
    for name, experiment in REGISTRY.items():
        if name in OWN_METHODS:
            continue
        config = importlib.import_module(f"configs.{name}").get_config()
        if "methods" not in config:
            continue  # irp has no methods
        config.methods = ("abs_theta",)
        if "noise_methods" in config:
            config.noise_methods = ("abs_theta",)
        experiment.validate(config)
        config.methods = ("abs_theta_typo",)
        with pytest.raises(ConfigError, match="config.methods"):
            experiment.validate(config)


@pytest.mark.parametrize("name", ["magnitude", "imp", "dense", "autosparse", "a+b", "", 3])
def test_taken_reserved_or_malformed_names_are_refused(name):
    with pytest.raises(ConfigError, match="pai.register"):
        pai.register(name, abs_theta)


def test_the_reserved_names_cover_the_experiments_other_methods():
    assert set(masking.AFTER_TRAINING + masking.LEARNED + ("dense",)) <= set(pai.RESERVED)


@pytest.mark.parametrize("score_fn", [lambda params: params, lambda a, b, c, d, e, f: a, "abs", jnp.abs])
def test_a_scorer_without_the_shared_signature_is_refused(score_fn):
    with pytest.raises(ConfigError, match=r"score_fn\(apply_fn, params, batches, key, options\)"):
        pai.register("bad", score_fn)


def test_the_same_definition_may_be_registered_again_but_not_another_one(tmp_path):
    path = str(tmp_path / "scorer.py")
    source = "def f(apply_fn, params, batches, key, options, scale=1.0):\n    return params\n"

    def load(src):  # the file executed anew, as config_flags does every time it loads a config
        namespace = {}
        exec(compile(src, path, "exec"), namespace)
        return namespace["f"]

    pai.register("mine", abs_theta)
    pai.register("mine", abs_theta)  # the same function object
    pai.register("from_file", load(source))
    pai.register("from_file", load(source))  # the file loaded again
    for other in (source.replace("return params", "return None"), source.replace("1.0", "2.0"), "\n" + source):
        with pytest.raises(ConfigError, match="already registered"):
            pai.register("from_file", load(other))
    with pytest.raises(ConfigError, match="already registered"):
        pai.register("mine", lambda apply_fn, params, batches, key, options: params)


def test_a_scorer_returning_a_tree_unlike_params_is_a_config_error():
    apply_fn, params, batches = mlp()
    pai.register("wrong", lambda apply_fn, params, batches, key, options: params["Dense_0"])
    with pytest.raises(ConfigError, match="scorer 'wrong' returned"):
        pai.prune("wrong", apply_fn, params, batches, jax.random.key(0), 0.5)


def load_config_file(path: str, module_name: str):
    """``get_config()`` of the file at ``path`` executed as a new module, as ml_collections' config flag loads it."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_the_example_config_registers_its_scorer_and_survives_loading_twice():
    path = os.path.join(REPO, "configs", "custom_scorer.py")
    importlib.import_module("configs.custom_scorer")  # imported as a module, then loaded twice as a file
    config = [load_config_file(path, f"config_{i}") for i in range(2)][-1]
    assert "gradient_magnitude" in pai.methods() and "gradient_magnitude" in config.methods
    REGISTRY["pai"].validate(config)
    apply_fn, params, batches = mlp()
    batch = jax.tree.map(lambda a: a[0], batches)
    got = jax.jit(lambda p: pai.score("gradient_magnitude", apply_fn, p, batch, jax.random.key(0)))(params)
    grads = jax.jit(jax.grad(pai.scoring_loss, argnums=1), static_argnums=0)(apply_fn, params, batch)
    assert_close_across_programs(got["Dense_1"]["kernel"], np.abs(grads["Dense_1"]["kernel"]), rtol=1e-6)


SCORER_CONFIG = """
import jax
import jax.numpy as jnp

from configs import pai as pai_config
from jaxprune import pai


def absolute_weights(apply_fn, params, batches, key, options):
    return jax.tree.map(jnp.abs, params)


pai.register("absolute_weights", absolute_weights)


def get_config():
    c = pai_config.get_config()
    c.update(dataset="gaussian", labels="teacher", num_examples=128, num_test=64, input_dim=8, num_classes=3,
             widths=(16,), num_seeds=2, epochs=1, batch_size=32, sparsities=(0.5, 0.9), dense_reference=False,
             methods=("magnitude", "absolute_weights"))
    return c
"""


def test_a_config_file_registering_abs_theta_runs_the_cli_and_equals_magnitude(tmp_path):
    """The issue's done-when: a config in a temporary directory registers |θ|; the pai experiment through the CLI
    gives it exactly magnitude's accuracies and densities."""
    config_file = tmp_path / "my_scorer.py"
    config_file.write_text(textwrap.dedent(SCORER_CONFIG))
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxprune.main", f"--config={config_file}", f"--workdir={workdir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["method"], r["sparsity"]): r for r in json.load(open(workdir / "results.json"))["results"]}
    assert sorted(rows) == [("absolute_weights", 0.5), ("absolute_weights", 0.9), ("magnitude", 0.5),
                            ("magnitude", 0.9)]
    for sparsity in (0.5, 0.9):
        ours, theirs = rows["absolute_weights", sparsity], rows["magnitude", sparsity]
        for key in ("test_accuracy", "train_accuracy", "test_loss", "density", "layer_density"):
            assert ours[key] == theirs[key], key


BAD_SCORER_CONFIG = """from configs import pai as pai_config
from jaxprune import pai


def {name}({args}):
    return params


pai.register("{name}", {name})


def get_config():
    return pai_config.get_config()
"""


@pytest.mark.parametrize("name, args, reason", [
    ("one_argument", "params", r"score_fn must be callable as score_fn\(apply_fn, params, batches, key, options\) "
                               r"\(too many positional arguments\)"),
    ("snip", "apply_fn, params, batches, key, options", "a scorer named 'snip' is already registered"),
])
def test_a_refused_registration_in_a_config_file_is_one_line_with_its_reason_and_line(tmp_path, name, args, reason):
    config_file = tmp_path / "bad_scorer.py"
    config_file.write_text(BAD_SCORER_CONFIG.format(name=name, args=args))
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxprune.main", f"--config={config_file}",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(rf"--config={re.escape(str(config_file))} line 9: pai.register.*{reason}",
                                         lines[0]), proc.stderr
    assert not (tmp_path / "run").exists()
