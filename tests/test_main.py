"""The command line as a user runs it: outputs of the IRP job, finished/different workdirs, bad input."""
import json
import os
import signal
import stat
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import irp as irp_config
from jaxprune import main as main_lib
from jaxprune.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.dataset=gaussian", "--config.labels=teacher", "--config.num_examples=128", "--config.num_test=64",
        "--config.input_dim=8", "--config.num_classes=3", "--config.widths=(16,)", "--config.num_seeds=2",
        "--config.epochs=1", "--config.batch_size=32", "--config.rounds=2"]


def run_cli(*args, config="configs/irp.py", umask=0o022):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxprune.main", f"--config={config}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.umask(umask))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("irp") / "run")
    proc = run_cli(f"--workdir={workdir}", *TINY, umask=0o027)
    assert proc.returncode == 0, proc.stderr
    return workdir, proc


def test_output_files_honour_the_umask(finished_run):
    workdir, _ = finished_run
    for name in ("results.json", "config.json", "survival.npz", "metrics.jsonl", "accuracy_vs_density.png"):
        assert stat.S_IMODE(os.stat(os.path.join(workdir, name)).st_mode) == 0o640, name  # 0o666 less 0o027


def test_irp_job_writes_every_output(finished_run):
    workdir, proc = finished_run
    assert {"config.json", "metrics.jsonl", "results.json", "survival.npz", "accuracy_vs_density.png",
            "survival_histogram.png"} <= set(os.listdir(workdir))
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["experiment"] == "irp" and results["num_seeds"] == 2 and results["rounds"] == 2
    assert np.asarray(results["test_accuracy"]).shape == (2, 2)
    np.testing.assert_allclose(results["density_per_round"], [1.0, 0.8])
    assert -1.0 <= results["survival_ccc"] <= 1.0
    survival = np.load(os.path.join(workdir, "survival.npz"))
    assert sorted(survival.files) == ["Dense_0/kernel", "Dense_1/kernel"]
    assert survival["Dense_0/kernel"].shape == (2, 8, 16)
    assert all(survival[k].min() >= 0 and survival[k].max() <= 2 for k in survival.files)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert len([x for x in lines if "test_accuracy" in x]) == 2 * 2  # one per (round, seed)
    assert json.load(open(os.path.join(workdir, "config.json")))["num_seeds"] == 2
    assert "round 2/2" in proc.stdout  # progress is printed
    cores = len(os.sched_getaffinity(0))
    assert results["devices"]["devices"] == min(2, cores)  # every core by default, up to the 2 seeds
    assert results["devices"]["processes"] == 1 and results["seed_ids"] == [0, 1]


def test_cpu_devices_1_runs_every_seed_on_one_device(tmp_path):
    proc = run_cli(f"--workdir={tmp_path / 'run'}", *TINY, "--cpu_devices=1")
    assert proc.returncode == 0, proc.stderr
    assert "2 seeds over 1 cpu device(s)" in proc.stdout
    assert json.load(open(tmp_path / "run" / "results.json"))["devices"]["devices"] == 1


def test_finished_workdir_is_reported_not_recomputed(finished_run):
    workdir, _ = finished_run
    before = os.path.getmtime(os.path.join(workdir, "results.json"))
    proc = run_cli(f"--workdir={workdir}", *TINY)
    assert proc.returncode == 0 and "already holds the finished run" in proc.stdout
    assert os.path.getmtime(os.path.join(workdir, "results.json")) == before


def test_workdir_of_another_config_is_refused_with_the_differing_keys(finished_run):
    workdir, _ = finished_run
    proc = run_cli(f"--workdir={workdir}", *TINY, "--config.rounds=3")
    assert proc.returncode == 2
    assert "rounds: 2 -> 3" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["--config.num_seeds=0"], "config.num_seeds=0"),
    (["--config.num_seeds=abc"], "bad command line"),
    (["--config.no_such_key=1"], "--config.no_such_key: the config has no key 'no_such_key'"),
    (["--config.num_seed=4"], "has no key 'num_seed'; did you mean num_seeds, "),
    (["--noconfig.overwrit"], "--noconfig.overwrit: the config has no key 'overwrit'; did you mean overwrite?"),
    (["--config.dataset=cifar10"], "tfds build cifar10"),
    (["--config.batch_size=100000"], "config.batch_size=100000"),
    (["--config.checkpoint_every_steps=-1"], "config.checkpoint_every_steps=-1"),
    (["--config.seed_ids=(1,1)"], "config.seed_ids"),
    (["--config.seed_ids=(-2,)"], "config.seed_ids"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    workdir = tmp_path / "never"
    data_dir = ["--config.data_dir=" + str(tmp_path / "tfds")] if "cifar10" in args[0] else []
    proc = run_cli(f"--workdir={workdir}", *TINY, *args, *data_dir)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not workdir.exists()


def test_missing_key_names_the_first_missing_part_and_the_closest_keys_at_its_level():
    config = ml_collections.ConfigDict({"seed": 0, "optim": {"learning_rate": 0.1, "momentum": 0.9}, "widths": (4,)})
    assert main_lib.missing_key(config, "optim.learning_rate") is None
    assert main_lib.missing_key(config, "optim.lerning_rate") == (
        "optim has no key 'lerning_rate'; did you mean optim.learning_rate?")
    assert main_lib.missing_key(config, "optimizer.momentum") == (
        "the config has no key 'optimizer'; did you mean optim?")
    assert main_lib.missing_key(config, "widths.depth") == "widths is a tuple, not a config with key 'depth'"
    assert "no key is close" in main_lib.missing_key(config, "zzz")


def test_unwritable_workdir_and_missing_config_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli(f"--workdir={blocker}/sub", *TINY)
    assert proc.returncode == 2 and "not a writable directory" in proc.stderr
    proc = run_cli("--workdir=x", config="configs/does_not_exist.py")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("key, value, needle", [
    ("experiment", "nope", "config.experiment"),
    ("model", "resnet99", "config.model"),
    ("dataset", "imagenet", "config.dataset"),
    ("prune_fraction", 1.0, "config.prune_fraction"),
    ("prune_fraction", 0.0, "config.prune_fraction"),
    ("rounds", 0, "config.rounds"),
    ("optimizer", "lamb", "config.optimizer"),
    ("scope", "local", "config.scope"),
    ("label_noise", -0.1, "config.label_noise"),
])
def test_validation_names_the_key(key, value, needle):
    config = irp_config.get_config()
    config[key] = value
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        main_lib.validate(config)


def test_a_workdir_in_use_is_refused_and_an_interrupted_run_leaves_it_free(tmp_path):
    """A second run on the workdir of a live run exits 2 with one line and touches nothing; Ctrl-C (SIGINT) ends the
    first with one line and exit code 130, and the same command resumes from its checkpoint and finishes."""
    workdir = tmp_path / "run"
    slow = [*TINY[:-2], "--config.epochs=4", "--config.rounds=60"]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    first = subprocess.Popen([sys.executable, "-m", "jaxprune.main", "--config=configs/irp.py",
                              f"--workdir={workdir}", *slow], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,  # Ctrl-C handled even if this shell ignores it:
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in first.stdout:  # wait until it has checkpointed a round (it holds the workdir from the start)
            if "round 1/60" in line:
                break
        first.send_signal(signal.SIGSTOP)  # alive but paused, however long the second run takes to start
        before = sorted(os.listdir(workdir))
        second = run_cli(f"--workdir={workdir}", *slow)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert "in use by another run" in second.stderr and f"pid {first.pid}" in second.stderr
        assert sorted(os.listdir(workdir)) == before
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
        assert first.returncode == 130, stderr
        assert stderr == ("jaxprune: interrupted; rerun the same command to resume from the last checkpoint under "
                          f"{workdir / 'checkpoints'}\n")
    finally:
        first.kill()
        first.wait()
    third = run_cli(f"--workdir={workdir}", *slow)
    assert third.returncode == 0, third.stderr
    assert "resumed from the checkpoint after round" in third.stdout
    assert os.path.exists(workdir / "results.json")
