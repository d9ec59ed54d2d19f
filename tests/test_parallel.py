"""Tests of jaxprune.parallel: the seed axis sharded over 4 devices, and over 2 processes, gives the 1-device answer.

JAX fixes its device count when it is imported, so every placement runs in a fresh subprocess of SCRIPT with
``--xla_force_host_platform_device_count``; each prints one JSON line that the tests compare.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import errors, parallel

NUM_SEEDS = 4


def fit(key, x, y):
    """Five SGD steps (lr 0.1) on the mean squared error of x @ w vs y from w ~ N(0, I); final w and the losses."""
    def step(w, _):
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return w - 0.1 * grad, loss
    return jax.lax.scan(step, jax.random.normal(key, (x.shape[1],)), None, length=5)


def seeds_and_data():
    keys = jax.random.split(jax.random.key(0), NUM_SEEDS)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    return keys, (x, x @ np.array([1.0, -2.0, 0.5], np.float32))


fit_seeds = jax.jit(jax.vmap(fit, in_axes=(0, None, None)))


def run_single():
    keys, (x, y) = seeds_and_data()
    one_per_call = [fit_seeds(keys[i:i + 1], x, y) for i in range(NUM_SEEDS)]
    return {"fit": [np.asarray(a).tolist() for a in fit_seeds(keys, x, y)],
            "fit_one_seed_per_call": [np.concatenate(a).tolist() for a in zip(*one_per_call)]}


def run_sharded():
    mesh = parallel.seed_mesh()
    keys, data = seeds_and_data()
    weights, losses = fit_seeds(parallel.shard_seeds(keys, mesh), *parallel.replicate(data, mesh))
    return {"fit": [a.tolist() for a in parallel.to_host((weights, losses))],
            "process_count": jax.process_count(), "device_count": jax.device_count(),
            "is_primary": parallel.is_primary(),
            "devices_holding_output": len(weights.sharding.device_set),
            "local_shard_shapes": [list(s.data.shape) for s in weights.addressable_shards]}


def config_error(call):
    """The message of the ConfigError that call() raises ('' if it raises none)."""
    try:
        call()
    except errors.ConfigError as error:
        return str(error)
    return ""


def run_checks():
    parallel.initialize()  # no arguments, not a TPU VM: stays one process
    mesh = parallel.seed_mesh()
    return {"six_seeds": [config_error(lambda: parallel.check_num_seeds(6, mesh)),
                          config_error(lambda: parallel.shard_seeds(np.zeros((6, 2)), mesh))],
            "two_seeds": config_error(lambda: parallel.check_num_seeds(2, mesh)),
            "eight_seeds": config_error(lambda: parallel.check_num_seeds(8, mesh)),
            "distributed": jax.distributed.is_initialized(), "process_count": jax.process_count(),
            "mesh_axes": list(mesh.axis_names), "mesh_size": mesh.size}


def run_multiprocess(process_id, port):
    parallel.initialize(f"127.0.0.1:{port}", 2, int(process_id))
    return run_sharded()


def run_cached():
    counts = {"/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/cache_misses": 0}
    def count(event, **kwargs):
        if event in counts:
            counts[event] += 1
    jax.monitoring.register_event_listener(count)
    cache_dir = parallel.enable_compilation_cache()
    run_single()
    return {"cache_dir": cache_dir, "hits": counts["/jax/compilation_cache/cache_hits"],
            "misses": counts["/jax/compilation_cache/cache_misses"]}


mode, *args = sys.argv[1:]
print(json.dumps(globals()["run_" + mode](*args)))
'''


def _env(num_devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()  # no compilation cache but the one a test names (conftest's too)
           if k not in ("JAXPRUNE_CACHE_DIR", "XDG_CACHE_HOME", "JAX_COMPILATION_CACHE_DIR")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}", **extra)
    return env


def _start(mode: str, *args: str, num_devices: int, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode, *args], env=_env(num_devices, **extra_env),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(*processes: subprocess.Popen) -> list[dict]:
    """The JSON line each process prints; kills them all if one fails or they take over 60 s."""
    try:
        outputs = [p.communicate(timeout=60) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def _run(mode: str, *args: str, num_devices: int, **extra_env: str) -> dict:
    return _results(_start(mode, *args, num_devices=num_devices, **extra_env))[0]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.fixture(scope="module")
def single_device() -> dict:
    """The 4-seed fit on one device with no placement, as one batch of 4 and as 4 calls on one seed each."""
    return _run("single", num_devices=1)


def _assert_same_fit(placed: list, single_device: dict) -> None:
    """Bit-identical to the one-device run of the same per-device batch (one seed per device); within float32
    rounding of the one-batch run, whose batched dot products XLA:CPU vectorizes in another summation order."""
    assert placed == single_device["fit_one_seed_per_call"]  # float32 values compared exactly
    for placed_part, batched_part in zip(placed, single_device["fit"]):
        np.testing.assert_allclose(placed_part, batched_part, rtol=1e-5, atol=1e-6)


def test_reference_fit_decreases_loss(single_device):
    weights, losses = map(np.asarray, single_device["fit"])
    assert weights.shape == (4, 3) and losses.shape == (4, 5)
    assert np.all(np.diff(losses, axis=1) < 0)
    assert len({tuple(w) for w in weights}) == 4  # every seed starts elsewhere


def test_four_devices_reproduce_one_device_fit(single_device):
    result = _run("sharded", num_devices=4)
    assert result["device_count"] == 4 and result["devices_holding_output"] == 4
    assert result["local_shard_shapes"] == [[1, 3]] * 4
    _assert_same_fit(result["fit"], single_device)


def test_two_processes_reproduce_one_device_fit_on_both(single_device):
    port = _free_port()
    results = _results(*(_start("multiprocess", str(i), port, num_devices=2) for i in range(2)))
    for process_id, result in enumerate(results):
        assert result["process_count"] == 2 and result["device_count"] == 4
        assert result["devices_holding_output"] == 4 and result["local_shard_shapes"] == [[1, 3]] * 2
        assert result["is_primary"] == (process_id == 0)
        _assert_same_fit(result["fit"], single_device)


def test_bad_seed_counts_are_config_errors_and_initialize_without_arguments_stays_local():
    result = _run("checks", num_devices=4)
    assert result["mesh_axes"] == ["seeds"] and result["mesh_size"] == 4
    for message in result["six_seeds"]:
        assert "num_seeds=6" in message and "4 devices" in message
        assert message.endswith("use num_seeds=4 or num_seeds=8") and "\n" not in message
    assert result["two_seeds"].endswith("use num_seeds=4") and result["eight_seeds"] == ""
    assert result["distributed"] is False and result["process_count"] == 1


def test_the_test_session_compiles_into_one_fresh_cache_of_its_own():
    """conftest.py: this process, the CLI subprocesses and notebook kernels share one cache, not the user's."""
    cache_dir = os.environ["JAXPRUNE_CACHE_DIR"]
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == cache_dir == jax.config.jax_compilation_cache_dir
    assert os.path.isdir(cache_dir) and os.path.basename(cache_dir).startswith("jaxprune-test-cache-")
    assert "JAX_COMPILATION_CACHE_DIR" not in _env(1) and "JAXPRUNE_CACHE_DIR" not in _env(1)


def test_compilation_cache_is_written_then_reused(tmp_path):
    cache_dir = tmp_path / "xdg" / "jaxprune" / "jax_cache"
    first = _run("cached", num_devices=1, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert first["cache_dir"] == str(cache_dir)
    entries = sorted(os.listdir(cache_dir))
    assert entries and first["misses"] >= 1 and first["hits"] == 0
    second = _run("cached", num_devices=1, JAXPRUNE_CACHE_DIR=str(cache_dir))
    assert second["cache_dir"] == str(cache_dir)
    assert second["hits"] == first["misses"] and second["misses"] == 0
    assert sorted(os.listdir(cache_dir)) == entries


CORES_SCRIPT = r'''
import json, sys
from jaxprune import parallel
devices = parallel.use_cpu_cores(int(sys.argv[1]), cores=int(sys.argv[2]))
import jax, os
print(json.dumps({"returned": devices, "devices": len(jax.devices()), "mesh": parallel.seed_mesh().size,
                  "xla_flags": os.environ["XLA_FLAGS"]}))
'''


def cores_run(num_seeds, cores, xla_flags=""):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
    proc = subprocess.run([sys.executable, "-c", CORES_SCRIPT, str(num_seeds), str(cores)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("num_seeds,cores,expected", [(6, 4, 3), (8, 4, 4), (5, 2, 1), (1, 8, 1), (32, 2, 2)])
def test_use_cpu_cores_gives_the_largest_divisor_of_the_seeds_up_to_the_cores(num_seeds, cores, expected):
    out = cores_run(num_seeds, cores)
    assert out["returned"] == out["mesh"] == expected
    # at least MIN_CPU_DEVICES devices exist (XLA's thread pool is sized by them), the mesh uses the first ones
    from jaxprune.parallel import MIN_CPU_DEVICES
    assert out["devices"] == max(len(os.sched_getaffinity(0)), expected, MIN_CPU_DEVICES)
    assert parallel_flag() in out["xla_flags"]


def test_use_cpu_cores_leaves_a_forced_device_count_alone():
    out = cores_run(8, 4, "--xla_force_host_platform_device_count=2")
    assert out["returned"] == 0 and out["devices"] == out["mesh"] == 2


def parallel_flag():
    from jaxprune import parallel
    return parallel.CPU_REGION_ANALYSIS


TRAIN_SCRIPT = r'''
import hashlib, sys
import jax, numpy as np
from jaxprune import masks, models, train
x = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
data = train.Data(jax.numpy.asarray(x), jax.numpy.asarray((x[:, 0] > 0).astype(np.int32)))
model = models.create("mlp", 2, widths=(16, 16))
tx = train.make_optimizer("adam", 1e-2, total_steps=30)
def one(key):
    params, stats = train.init_variables(model, key, data.x[0])
    state = train.init_state(params, stats, tx)
    return train.train(state, masks.ones(params), data, key, model=model, tx=tx, epochs=5, batch_size=16)[0]
out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 3))
print(hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in jax.tree.leaves(out))).hexdigest())
'''


def test_cpu_region_analysis_changes_no_bit_of_training():
    """The XLA flag use_cpu_cores turns on only removes copies: weights and optimizer state after 5 epochs of
    vmapped Adam training are bit-identical with and without it."""
    digests = []
    for flags in ("", parallel_flag()):
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.strip())
    assert digests[0] == digests[1]
