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
STEPS = 256 // 32 * 3  # training steps per round
EVERY = "--config.checkpoint_every_steps=5"
ENV = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")

# Runs the CLI with SIGKILL around orbax's final rename of checkpoint $KILL_AT: "before" the rename, the process
# dies with a fully written temporary checkpoint directory that was never committed; "after" it, just after the
# checkpoint was committed (a deterministic stand-in for a preemption at that moment).
KILL_AT_CHECKPOINT = """
import os, signal, sys
from absl import app
from orbax.checkpoint._src.path import atomicity
original = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
    at = self.get_final().name == os.environ["KILL_AT"]
    if at and os.environ["KILL_WHEN"] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = await original(self, *args, **kwargs)
    if at:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
atomicity.AtomicRenameTemporaryPath.finalize = finalize
from jaxprune import main
sys.argv = ["jaxprune.main"] + sys.argv[1:]
app.run(main.main, flags_parser=main.parse_flags)
"""


def run_killed_at_checkpoint(workdir, number, when, *extra):
    env = dict(ENV, KILL_AT=str(number), KILL_WHEN=when)
    proc = subprocess.run([sys.executable, "-c", KILL_AT_CHECKPOINT, f"--workdir={workdir}", *ARGS, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


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


def kill_when(workdir, ready, *extra, timeout=240):
    proc = subprocess.Popen([sys.executable, "-m", "jaxprune.main", f"--workdir={workdir}", *ARGS, *extra],
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
        kill_when(workdir, lambda: 3 * STEPS in checkpoints(workdir))
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    proc = run(workdir)
    assert proc.returncode == 0, proc.stderr
    if point != "before_first_checkpoint":
        assert "resumed from the checkpoint after round" in proc.stdout
    assert_same_outputs(reference, workdir)


def test_sigkill_mid_round_resumes_from_the_step_checkpoint(reference, tmp_path):
    """checkpoint_every_steps=5: killed after step 10 of round 2, the rerun (checkpointing every 7 steps)
    continues that round from step 10 (weights, Adam moments, data-order position, per-step metrics) and ends
    where the uninterrupted run (which checkpointed only per round) ended."""
    workdir = str(tmp_path / "run")
    run_killed_at_checkpoint(workdir, STEPS + 10, "after", EVERY)
    assert max(checkpoints(workdir)) == STEPS + 10
    proc = run(workdir, "--config.checkpoint_every_steps=7")  # N may change between the runs
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from the checkpoint after round 1, step 10/{STEPS} of round 2" in proc.stdout
    assert_same_outputs(reference, workdir)


def test_sigkill_during_checkpoint_write_leaves_no_checkpoint_that_is_trusted(reference, tmp_path):
    workdir = str(tmp_path / "run")
    run_killed_at_checkpoint(workdir, 2 * STEPS, "before")
    assert checkpoints(workdir) == [STEPS]  # round 2's checkpoint was being written: not committed
    proc = run(workdir)
    assert proc.returncode == 0 and "resumed from the checkpoint after round 1 in" in proc.stdout, proc.stderr
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


PAI_ARGS = ["--config=configs/pai.py", "--config.dataset=gaussian", "--config.labels=teacher",
            "--config.num_examples=256", "--config.num_test=64", "--config.input_dim=8", "--config.num_classes=3",
            "--config.widths=(16,)", "--config.num_seeds=2", "--config.epochs=2", "--config.batch_size=32",
            "--config.methods=('imp','synflow')", "--config.sparsities=(0.5,0.8)", "--config.dense_reference=False",
            "--config.prune_fraction=0.5", "--config.synflow_rounds=20"]


def test_sigkill_during_pai_scoring_then_rerun_resumes_imp_and_equals_uninterrupted(tmp_path):
    """pai with IMP then SynFlow: killed once IMP's rows are logged (SynFlow is being scored), the rerun restores
    IMP from its last round checkpoint instead of repeating it, and writes what an uninterrupted run writes."""
    reference, workdir = str(tmp_path / "reference"), str(tmp_path / "run")
    command = [sys.executable, "-m", "jaxprune.main", *PAI_ARGS]
    proc = subprocess.run([*command, f"--workdir={reference}"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        killed = subprocess.Popen([*command, f"--workdir={workdir}"], cwd=REPO, env=ENV, stdout=out,
                                  stderr=subprocess.DEVNULL)
        start = time.time()
        while "imp sparsity 0.8" not in log.read_text() and killed.poll() is None and time.time() - start < 240:
            time.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert "synflow sparsity" not in log.read_text() and not os.path.exists(os.path.join(workdir, "results.json"))
    proc = subprocess.run([*command, f"--workdir={workdir}"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from the checkpoint after round 3" in proc.stdout  # 0.5 -> 0.25 -> 0.2: the whole IMP run
    for name in ("results.json", "metrics.jsonl"):
        assert (tmp_path / "reference" / name).read_text() == (tmp_path / "run" / name).read_text()
