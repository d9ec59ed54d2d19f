"""The Colab notebooks (stored without outputs, executed here in a fresh kernel started in notebooks/, as Jupyter
and ``jupyter nbconvert --execute`` start it, with no PYTHONPATH) and the gallery script
(``scripts/make_gallery.py --quick --only irp`` end to end)."""
from __future__ import annotations

import filecmp
import glob
import importlib
import importlib.util
import os
import shlex
import subprocess
import sys
import zipfile
from unittest import mock

import nbformat
import pytest
from nbclient import NotebookClient

from jaxprune import config as config_lib
from jaxprune.experiments import REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("01_quickstart", "02_irp_and_autosparse", "03_no_free_prune")
CELL_TIMEOUT_S = 300


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(REPO, "notebooks", f"{name}.ipynb"), as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def load_gallery():
    spec = importlib.util.spec_from_file_location("make_gallery", os.path.join(REPO, "scripts", "make_gallery.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_notebooks_are_the_three_and_have_no_outputs():
    stored = sorted(os.path.basename(p)[:-len(".ipynb")] for p in glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))
    assert stored == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        notebook = read(name)
        nbformat.validate(notebook)
        for cell in code_cells(notebook):
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs ({cell.source[:60]!r})"


def install_cell() -> str:
    """The first code cell, the same in every notebook."""
    sources = {code_cells(read(name))[0].source for name in NOTEBOOKS}
    assert len(sources) == 1, "the notebooks' install cells differ"
    return sources.pop()


def run_install_cell(source: str, on_colab: bool, clone=None) -> mock.MagicMock:
    """Execute the install cell with subprocess.run mocked (``clone(args)`` plays `git clone`); returns the mock."""
    def fake_run(args, **kwargs):
        if args[:2] == ["git", "clone"] and clone:
            clone(args)
        return mock.MagicMock(returncode=0)

    colab = {"google.colab": mock.MagicMock()} if on_colab else {}
    with mock.patch("subprocess.run", side_effect=fake_run) as run, mock.patch.dict(sys.modules, colab), \
            mock.patch.object(sys, "path", list(sys.path)):
        exec(compile(source, "install_cell", "exec"), {})
    return run


def test_the_install_cell_does_nothing_locally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert '"google.colab" in sys.modules' in install_cell()
    run_install_cell(install_cell(), on_colab=False).assert_not_called()
    assert os.listdir(tmp_path) == []


def test_the_install_cell_started_in_notebooks_works_from_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "irp.py").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    run_install_cell(install_cell(), on_colab=False).assert_not_called()
    assert os.getcwd() == str(tmp_path)


def test_the_install_cell_on_colab_without_a_source_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="set JAXPRUNE_REPO_URL in this cell .* or upload the repository as "
                                           "jaxprune.zip"):
        run_install_cell(install_cell(), on_colab=True)
    assert "OWNER" not in install_cell()


def test_the_install_cell_on_colab_clones_the_url_and_installs_from_the_clone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "https://example.org/someone/jaxprune.git"
    source = install_cell().replace('JAXPRUNE_REPO_URL = ""', f'JAXPRUNE_REPO_URL = "{url}"', 1)
    assert source != install_cell()

    def clone(args):
        os.makedirs(os.path.join(args[-1], "configs"))
        open(os.path.join(args[-1], "pyproject.toml"), "w").close()

    run = run_install_cell(source, on_colab=True, clone=clone)
    calls = [c.args[0] for c in run.call_args_list]
    assert calls[0] == ["git", "clone", "-q", url, "jaxprune"]
    assert calls[1][1:] == ["-m", "pip", "install", "-q", "-e", "."] and len(calls) == 2
    assert os.getcwd() == str(tmp_path / "jaxprune")


def test_the_install_cell_on_colab_installs_an_uploaded_zip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(tmp_path / "jaxprune.zip", "w") as z:  # as GitHub's "Download ZIP" nests it
        z.writestr("jaxprune-main/pyproject.toml", "")
        z.writestr("jaxprune-main/configs/irp.py", "")
        z.writestr("jaxprune-main/notebooks/pyproject.toml", "")  # a deeper one is not the root
    run = run_install_cell(install_cell(), on_colab=True)
    assert [c.args[0][1:] for c in run.call_args_list] == [["-m", "pip", "install", "-q", "-e", "."]]
    assert os.getcwd() == str(tmp_path / "jaxprune" / "jaxprune-main")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_small_settings_are_the_default(name):
    sources = [cell.source for cell in code_cells(read(name))]
    assert sum("PAPER_SCALE = False" in s for s in sources) == 1
    assert not any("PAPER_SCALE = True" in s for s in sources)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_a_fresh_kernel_and_draws_its_figures(name):
    notebook = read(name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # imports as a user's kernel finds them
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
    client.execute(env=env)  # raises CellExecutionError on any error
    outputs = [o for cell in code_cells(notebook) for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_gallery_quick_overrides_are_valid_configs_of_every_experiment():
    gallery = load_gallery()
    assert set(gallery.DEFAULTS + gallery.PRESETS) == set(gallery.QUICK)
    covered = set()
    for name, overrides in gallery.QUICK.items():
        config = importlib.import_module(f"configs.{name}").get_config()
        assert config.experiment == name or name in gallery.PRESETS
        covered.add(config.experiment)
        config.update({**gallery.QUICK_COMMON, **overrides})  # raises on a key the config does not have
        config_lib.validate_common(config)
        importlib.import_module(f"jaxprune.experiments.{config.experiment}").validate(config)
    assert covered == set(REGISTRY)  # every experiment is in the gallery, by its default config or a preset


def test_gallery_command_is_the_cli_with_the_quick_overrides():
    gallery = load_gallery()
    assert gallery.command("irp", "runs/gallery", quick=False) == [
        "python", "-m", "jaxprune.main", "--config=configs/irp.py", "--workdir=runs/gallery/irp"]
    quick = gallery.command("irp", "r", quick=True)
    assert "--config.rounds=2" in quick and "--config.widths=(16,)" in quick and "--config.num_seeds=2" in quick
    for name in gallery.QUICK:  # the printed line is the command a shell would run
        cmd = gallery.command(name, "runs/gallery_quick", quick=True)
        assert shlex.split(gallery.shell_line(cmd)) == cmd
    with pytest.raises(SystemExit) as exit_info:
        gallery.parse_args(["--only", "no_such_experiment"])
    assert exit_info.value.code == 2


def test_gallery_quick_only_irp_runs_the_cli_and_copies_its_figures(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "gallery"
    out.mkdir()
    (out / "irp-stale.png").write_bytes(b"old")  # a figure an earlier version made: removed
    (out / "pai-test_accuracy_vs_density.png").write_bytes(b"other")  # another experiment's: kept
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_gallery.py"), "--quick", "--only",
                           "irp", "--runs", str(runs), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"$ python -m jaxprune.main --config=configs/irp.py --workdir={runs}/irp" in proc.stdout
    made = sorted(os.path.basename(p) for p in glob.glob(str(runs / "irp" / "*.png")))
    assert made == ["accuracy_vs_density.png", "survival_histogram.png"]
    assert sorted(os.listdir(out)) == ["irp-" + m for m in made] + ["pai-test_accuracy_vs_density.png"]
    for m in made:
        assert filecmp.cmp(runs / "irp" / m, out / f"irp-{m}", shallow=False)
    assert (runs / "irp" / "results.json").exists()
