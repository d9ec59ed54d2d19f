"""The IRP job gives the same survival counts on 1 device, on 4 devices, and on 2 processes x 2 devices."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["-m", "jaxprune.main", "--config=configs/irp.py", "--config.dataset=gaussian", "--config.labels=teacher",
        "--config.num_examples=256", "--config.num_test=64", "--config.input_dim=8", "--config.num_classes=3",
        "--config.widths=(16,)", "--config.num_seeds=4", "--config.epochs=2", "--config.batch_size=32",
        "--config.rounds=3"]


def env(devices: int) -> dict:
    return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def survival(workdir) -> dict:
    data = np.load(os.path.join(workdir, "survival.npz"))
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("one") / "run")
    proc = subprocess.run([sys.executable, *ARGS, f"--workdir={workdir}"], cwd=REPO, env=env(1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return survival(workdir)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_four_devices_give_the_same_survival_counts(one_device, tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, *ARGS, f"--workdir={workdir}"], cwd=REPO, env=env(4),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same(one_device, survival(workdir))


def test_seed_count_not_divisible_by_devices_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, *ARGS, "--config.num_seeds=6", f"--workdir={tmp_path / 'run'}"],
                          cwd=REPO, env=env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "num_seeds=4 or num_seeds=8" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_two_processes_give_the_same_survival_counts_and_only_process_0_reports(one_device, tmp_path):
    """Both processes share one workdir, as hosts of a pod share a bucket: orbax writes each process's shards of
    the checkpoints there, and only process 0 writes results and figures and prints progress."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = str(tmp_path / "shared")
    procs = [subprocess.Popen([sys.executable, *ARGS, f"--workdir={workdir}",
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert_same(one_device, survival(workdir))
    assert "round 3/3" in outs[0][0] and "round" not in outs[1][0]
