"""Preemption safety: a run killed with SIGKILL at any point and rerun equals an uninterrupted run, bit for bit;
non-finite losses are caught per seed; results are deterministic."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=configs/irp.py", "--config.dataset=gaussian", "--config.labels=teacher",
        "--config.num_examples=256", "--config.num_test=64", "--config.input_dim=8", "--config.num_classes=3",
        "--config.widths=(16,)", "--config.num_seeds=2", "--config.epochs=3", "--config.batch_size=32",
        "--config.rounds=4"]
ENV = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")

# Runs the CLI with orbax's final rename of the checkpoint after round 2 replaced by SIGKILL: the process dies
# with a fully written temporary checkpoint directory that was never committed.
KILL_DURING_CHECKPOINT_WRITE = """
import os, signal, sys
from absl import app
from orbax.checkpoint._src.path import atomicity
original = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
    if self.get_final().name == "2":  # the step directory of the checkpoint after round 2
        os.kill(os.getpid(), signal.SIGKILL)
    return await original(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
from jaxprune import main
sys.argv = ["jaxprune.main"] + sys.argv[1:]
app.run(main.main, flags_parser=main.parse_flags)
"""


def run(workdir, *extra):
    return subprocess.run([sys.executable, "-m", "jaxprune.main", f"--workdir={workdir}", *ARGS, *extra],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def outputs(workdir):
    survival = np.load(os.path.join(workdir, "survival.npz"))
    with open(os.path.join(workdir, "results.json")) as f:
        results = f.read()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        metrics = f.read()
    return {k: survival[k] for k in survival.files}, results, metrics


def assert_same_outputs(a, b):
    sa, ra, ma = outputs(a)
    sb, rb, mb = outputs(b)
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert ra == rb and ma == mb


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ref") / "run")
    proc = run(workdir)
    assert proc.returncode == 0, proc.stderr
    return workdir


def kill_when(workdir, ready, timeout=240):
    proc = subprocess.Popen([sys.executable, "-m", "jaxprune.main", f"--workdir={workdir}", *ARGS],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    while not ready() and proc.poll() is None and time.time() - start < timeout:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def checkpoints(workdir):
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


@pytest.mark.parametrize("point", ["before_first_checkpoint", "after_round_3"])
def test_sigkill_then_rerun_equals_uninterrupted(reference, tmp_path, point):
    workdir = str(tmp_path / "run")
    if point == "before_first_checkpoint":
        kill_when(workdir, lambda: os.path.exists(os.path.join(workdir, "config.json")))
    else:
        rounds = int(point[-1])
        kill_when(workdir, lambda: rounds in checkpoints(workdir))
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    proc = run(workdir)
    assert proc.returncode == 0, proc.stderr
    if point != "before_first_checkpoint":
        assert "resumed from the checkpoint" in proc.stdout
    assert_same_outputs(reference, workdir)


def test_sigkill_during_checkpoint_write_leaves_no_checkpoint_that_is_trusted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_CHECKPOINT_WRITE, f"--workdir={workdir}", *ARGS],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoints(workdir) == [1]  # round 2's checkpoint was being written: not committed
    proc = run(workdir)
    assert proc.returncode == 0 and "resumed from the checkpoint after round 1" in proc.stdout, proc.stderr
    assert_same_outputs(reference, workdir)


def test_all_seeds_failing_exits_non_zero_with_one_line(tmp_path):
    proc = run(str(tmp_path / "run"), "--config.learning_rate=1e30", "--config.rounds=1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss" in lines[0]
    assert not os.path.exists(tmp_path / "run" / "results.json")


def test_overwrite_recomputes_from_scratch_deterministically(reference, tmp_path):
    workdir = str(tmp_path / "run")
    assert run(workdir).returncode == 0
    proc = run(workdir, "--config.overwrite=True")
    assert proc.returncode == 0 and "resumed" not in proc.stdout
    assert_same_outputs(reference, workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["overwrite"] is True
