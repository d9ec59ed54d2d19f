"""``python -m jaxprune.report``: a finished pai run (made by the CLI) and an unfinished workdir give the table,
CSV and figure with the t-intervals of the run's own per-seed values; every experiment's headline extraction;
bad paths are one line and exit code 2."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from jaxprune import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.dataset=gaussian", "--config.labels=teacher", "--config.num_examples=128", "--config.num_test=64",
        "--config.input_dim=8", "--config.num_classes=3", "--config.widths=(16,)", "--config.num_seeds=3",
        "--config.epochs=1", "--config.batch_size=32", "--config.sparsities=(0.5,0.9)",
        "--config.methods=('random','magnitude')", "--config.dense_reference=False"]


def run(module: str, *args: str):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """(a finished pai workdir, an unfinished one: the same config at another learning rate, no results.json)."""
    root = tmp_path_factory.mktemp("report")
    finished, unfinished = root / "finished", root / "unfinished"
    proc = run("jaxprune.main", "--config=configs/pai.py", f"--workdir={finished}", *TINY)
    assert proc.returncode == 0, proc.stderr
    unfinished.mkdir()
    config = json.load(open(finished / "config.json"))
    json.dump({**config, "learning_rate": 0.5}, open(unfinished / "config.json", "w"))
    return finished, unfinished


def t_interval(values):
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):  # scipy's interval of zero width is (nan, nan)
        return values[0], values[0]
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_report_of_a_finished_and_an_unfinished_workdir(workdirs, tmp_path):
    finished, unfinished = workdirs
    out = tmp_path / "out"
    proc = run("jaxprune.report", str(finished), str(unfinished), f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert f"{unfinished}: not finished (no results.json)" in proc.stdout
    assert sorted(os.listdir(out)) == ["report.csv", "report.md", "report.png"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.load(open(finished / "results.json"))["results"]
    table = (out / "report.md").read_text().splitlines()
    header = [c.strip() for c in table[table.index(next(x for x in table if x.startswith("| run")))].split("|")]
    assert header[1:-1] == ["run", "experiment", "learning_rate", "method", "metric", "sparsity 0.5", "sparsity 0.9"]
    lines = {tuple(c.strip() for c in x.split("|")[1:-1])[3]: x for x in table if x.startswith(f"| `{finished}`")}
    assert sorted(lines) == ["magnitude", "random"]
    assert any(x.startswith(f"| `{unfinished}` | pai | 0.5 | not finished") for x in table)
    for r in rows:
        low, high = t_interval(r["test_accuracy"])
        assert f"{np.mean(r['test_accuracy']):.4f} [{low:.4f}, {high:.4f}] (n=3)" in lines[r["method"]]
    with open(out / "report.csv") as f:
        records = list(csv.DictReader(f))
    assert [(x["run"], x["status"], x["learning_rate"]) for x in records[-1:]] == [(str(unfinished), "unfinished",
                                                                                    "0.5")]
    got = {(x["method"], float(x["sparsity"])): x for x in records if x["status"] == "finished"}
    assert sorted(got) == sorted((r["method"], r["sparsity"]) for r in rows)
    for r in rows:
        x = got[r["method"], r["sparsity"]]
        np.testing.assert_allclose([float(x["mean"]), float(x["ci95_lower"]), float(x["ci95_upper"])],
                                   [np.mean(r["test_accuracy"]), *t_interval(r["test_accuracy"])], rtol=1e-9)
        assert x["n"] == "3" and x["learning_rate"] == "0.001" and x["experiment"] == "pai"


def test_a_glob_and_a_directory_of_workdirs(workdirs, tmp_path, capsys):
    finished, _ = workdirs
    report.main([os.path.join(os.path.dirname(finished), "*"), f"--out={tmp_path}"])
    assert "unfinished: not finished" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        report.main([os.path.dirname(str(finished)), f"--out={tmp_path}"])
    assert exit_info.value.code == 2
    assert "not a jaxprune workdir (no config.json); it holds workdirs" in capsys.readouterr().err


@pytest.mark.parametrize("make, needle", [
    (lambda tmp: str(tmp / "missing"), "missing: no such directory"),
    (lambda tmp: str(tmp / "nothing*"), "nothing*: matches no path"),
    (lambda tmp: (tmp / "empty").mkdir() or str(tmp / "empty"), "not a jaxprune workdir (no config.json)"),
    (lambda tmp: (tmp / "a_file").write_text("x") and str(tmp / "a_file"), "a_file: no such directory"),
])
def test_bad_paths_are_one_line_and_exit_2(tmp_path, capsys, make, needle):
    with pytest.raises(SystemExit) as exit_info:
        report.main([make(tmp_path), f"--out={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_corrupt_results_file_is_named(workdirs, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(workdirs[0], broken)
    (broken / "results.json").write_text(json.dumps({"experiment": "pai", "results": [{"method": "x"}]}))
    with pytest.raises(SystemExit):
        report.main([str(broken), f"--out={tmp_path}"])
    assert "results.json: not the results of a pai run (KeyError" in capsys.readouterr().err


# Minimal results.json of each experiment, shaped as the experiments write them; seed 1 failed where they say so.
RESULTS = {
    "irp": {"density_per_round": [1.0, 0.8], "test_accuracy": [[0.5, 0.4], [0.0, 0.0], [0.7, 0.6]],
            "failed_seeds": [{"seed": 1, "round": 1, "step": 3}]},
    "pai": {"results": [{"method": "snip", "sparsity": 0.9, "test_accuracy": [0.5, 0.0, 0.7], "failed_seeds": [1]}]},
    "memorization": {"results": [{"method": "imp", "sparsity": 0.9, "train_accuracy": [0.5, None, 0.7]}]},
    "noise_correlation": {"results": [{"method": "imp", "sparsity": 0.9, "correlation": [0.5, None, 0.7]}]},
    "mutual_information": {"design": {"sparsity": 0.9},
                           "methods": {"imp": {"bits": 0.6, "per_seed": [{"bits": 0.5}, {"bits": 0.7}]}}},
    "autosparse": {"results": [{"method": "autosparse", "sparsity": 0.9, "test_accuracy": [0.5, None, 0.7]}]},
    "noise_correlation_curve": {"peaks": [{"density": 0.1, "paper_correlation_per_seed": [0.5, None, 0.7]}]},
    "toy_mutual_information": {"num_params": 10, "mi_bits": {"imp": [0.0, 0.6]}},
}


def test_every_experiment_has_a_headline_and_failed_seeds_are_left_out():
    from jaxprune.experiments import REGISTRY

    assert set(report.HEADLINES) == set(REGISTRY) == set(RESULTS)
    for experiment, results in RESULTS.items():
        rows = report.HEADLINES[experiment][1](results)
        method, sparsity, values = rows[-1]
        assert sparsity in (0.9, pytest.approx(0.2), pytest.approx(0.1)), experiment
        seeds = 1 if experiment == "toy_mutual_information" else 2  # the toy's MI is one exact value
        assert report.mean_interval(values)[::3] == (pytest.approx(0.6 if experiment != "irp" else 0.5), seeds)


def test_mean_interval_is_the_student_t_interval():
    values = np.random.default_rng(0).normal(size=7)
    mean, low, high, n = report.mean_interval([*values, np.nan, np.inf])
    assert n == 7 and mean == pytest.approx(values.mean())
    np.testing.assert_allclose([low, high], t_interval(values), rtol=1e-12)
    assert report.mean_interval([0.3])[0] == 0.3 and np.isnan(report.mean_interval([0.3])[1])
    assert report.mean_interval([])[3] == 0
