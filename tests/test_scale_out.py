"""A seed's numbers do not depend on the layout of the sweep: the IRP job gives bit-identical survival counts on 1
device, on every core (the default), on 4 devices, on 2 processes, and for one seed run alone.

The config (the default MLP 200-200 on MNIST-1D, 8 epochs a round) is one where layouts DO change the numbers
when the seeds are lifted with a plain ``jax.jit(jax.vmap(...))``: ``test_the_config_is_sensitive_to_layout``
shows it, so the other tests could fail.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["-m", "jaxprune.main", "--config=configs/irp.py", "--config.num_seeds=4", "--config.rounds=2",
        "--config.epochs=8"]


def env(devices: int | None = None) -> dict:
    flags = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices else {}
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | dict(PYTHONPATH=REPO, JAX_PLATFORMS="cpu") \
        | flags


def run(workdir, *extra, devices=None) -> dict:
    proc = subprocess.run([sys.executable, *ARGS, f"--workdir={workdir}", *extra], cwd=REPO, env=env(devices),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return survival(workdir)


def survival(workdir) -> dict:
    data = np.load(os.path.join(workdir, "survival.npz"))
    return {k: data[k] for k in data.files}


def mesh_size(workdir) -> int:
    return json.load(open(os.path.join(workdir, "results.json")))["devices"]["devices"]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one") / "run"
    counts = run(workdir, "--cpu_devices=1")
    assert mesh_size(workdir) == 1
    return counts


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_every_core_gives_the_same_survival_counts(one_device, tmp_path):
    assert_same(one_device, run(tmp_path / "run"))
    assert mesh_size(tmp_path / "run") == min(4, len(os.sched_getaffinity(0)))


def test_four_devices_give_the_same_survival_counts(one_device, tmp_path):
    assert_same(one_device, run(tmp_path / "run", devices=4))
    assert mesh_size(tmp_path / "run") == 4


def test_one_seed_run_alone_equals_that_seed_of_the_sweep(one_device, tmp_path):
    alone = run(tmp_path / "run", "--config.seed_ids=(3,)")
    assert_same({k: v[3:] for k, v in one_device.items()}, alone)
    assert json.load(open(tmp_path / "run" / "results.json"))["seed_ids"] == [3]


def test_two_processes_give_the_same_survival_counts_and_only_process_0_reports(one_device, tmp_path):
    """Both processes share one workdir, as hosts of a pod share a bucket: orbax writes each process's shards of
    the checkpoints there, and only process 0 writes results and figures and prints progress."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = str(tmp_path / "shared")
    procs = [subprocess.Popen([sys.executable, *ARGS, f"--workdir={workdir}", "--cpu_devices=1",
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert_same(one_device, survival(workdir))
    assert mesh_size(workdir) == 2
    assert "round 2/2" in outs[0][0] and "round" not in outs[1][0]


def test_seed_count_not_divisible_by_forced_devices_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, *ARGS, "--config.num_seeds=6", f"--workdir={tmp_path / 'run'}"],
                          cwd=REPO, env=env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "num_seeds=4 or num_seeds=8" in proc.stderr
    assert not (tmp_path / "run").exists()


SENSITIVITY = r'''
import jax, numpy as np
from jax.sharding import Mesh
from configs import irp
from jaxprune import masks, parallel, train
from jaxprune.experiments import common

config = irp.get_config()
config.num_seeds, config.epochs = 4, 2
setup = common.setup(config)
seeds = common.init_seeds(setup)
tx = train.optimizer_from_config(config, train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size))

def one(p, bs, key, data):
    state = train.init_state(p, bs, tx)
    return train.train(state, masks.ones(p), data, key, model=setup.model, tx=tx, epochs=config.epochs,
                       batch_size=config.batch_size)[0].params

args = jax.device_get((seeds.params, seeds.batch_stats, seeds.order_keys))
same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
out = {}
for size in (1, 4):
    mesh = Mesh(np.asarray(jax.devices()[:size]), (parallel.SEED_AXIS,))
    data = parallel.replicate(jax.device_get(setup.train_data), mesh)
    sharded = parallel.shard_seeds(args, mesh)
    out["vmap", size] = jax.device_get(jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))(*sharded, data))
    out["seed_map", size] = jax.device_get(parallel.seed_map(one, mesh, in_axes=(0, 0, 0, None))(*sharded, data))
print("RESULT", same(out["vmap", 1], out["vmap", 4]), same(out["seed_map", 1], out["seed_map", 4]))
'''


def test_the_config_is_sensitive_to_layout():
    """The training of this config, lifted with jit(vmap) over seeds sharded on 1 vs 4 devices, differs in its
    weights (XLA compiles a multi-device program differently); lifted with ``parallel.seed_map`` it does not."""
    proc = subprocess.run([sys.executable, "-c", SENSITIVITY], cwd=REPO, env=env(4), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "RESULT False True"
