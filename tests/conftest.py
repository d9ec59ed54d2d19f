"""Fixtures shared by the experiment tests, the mechanical check of every figure the suite draws, and one JAX
compilation cache for the whole test session."""
import os
import shutil
import tempfile

import jax
import matplotlib.colors
import numpy as np
import pytest

from jaxprune import parallel, plotting

SESSION_CACHE = "JAXPRUNE_TEST_SESSION_CACHE"  # set by the first pytest process; its xdist workers inherit it
CREATED_CACHE = pytest.StashKey[str]()

MAX_HEIGHT_OVER_WIDTH = 3.0
EDGE_TOLERANCE_INCHES = 0.01


def pytest_configure(config):
    """One persistent compilation cache per test session, empty at its start (as on a fresh CI machine, and never
    the user's ``~/.cache/jaxprune``): the pytest processes (every xdist worker), the CLI subprocesses
    (``JAXPRUNE_CACHE_DIR``, read by ``jaxprune.main``) and the notebook kernels (``JAX_COMPILATION_CACHE_DIR``)
    all share it, so a program the session has compiled once, in any of them, is loaded instead of compiled again.
    The tests of the cache itself (tests/test_parallel.py) give their subprocesses their own directories."""
    if SESSION_CACHE not in os.environ:
        os.environ[SESSION_CACHE] = config.stash[CREATED_CACHE] = tempfile.mkdtemp(prefix="jaxprune-test-cache-")
    cache_dir = os.environ[SESSION_CACHE]
    os.environ["JAXPRUNE_CACHE_DIR"] = os.environ["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    parallel.enable_compilation_cache(cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # in-process: only the slow compiles


def pytest_unconfigure(config):
    """The pytest process that made the session's cache removes it when the session ends."""
    if CREATED_CACHE in config.stash:
        shutil.rmtree(config.stash[CREATED_CACHE], ignore_errors=True)


@pytest.fixture(scope="session")
def run_experiment(tmp_path_factory):
    """``run(experiment, config) -> (config, workdir, results)``: validate ``config`` and run the experiment module
    into a fresh workdir, as ``jaxprune.main`` does."""
    def run(experiment, config):
        experiment.validate(config)
        workdir = str(tmp_path_factory.mktemp(config.experiment))
        return config, workdir, experiment.run(config, workdir)

    return run


def assert_close_across_programs(actual, expected, rtol=1e-5):
    """``actual`` ≈ ``expected`` where the two come from different compiled programs (jit vs eager, fused vs not).

    Such programs may sum in another order, so an entry near zero can differ by a few ulps of the array's scale,
    which a relative tolerance alone rejects; the absolute tolerance is ``rtol`` times the largest |expected|."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected), initial=0.0)))


def figure_problems(fig) -> list[str]:
    """What is mechanically wrong with ``fig`` as drawn at the saved resolution: two labelled lines of one panel
    in the same colour, dash and marker; one label drawn in two styles; anything (text included) reaching past
    the canvas; a canvas taller than :data:`MAX_HEIGHT_OVER_WIDTH` times its width."""
    fig.set_dpi(plotting.DPI)
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    problems = [f"{width:.1f} x {height:.1f} in: taller than {MAX_HEIGHT_OVER_WIDTH:g}x its width"
                ] if height > MAX_HEIGHT_OVER_WIDTH * width else []
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, over every artist drawn
    if min(box.x0, box.y0) < -EDGE_TOLERANCE_INCHES or box.x1 > width + EDGE_TOLERANCE_INCHES \
            or box.y1 > height + EDGE_TOLERANCE_INCHES:
        problems.append(f"drawn extent {box.bounds} reaches past the {width:.2f} x {height:.2f} in canvas")
    style_of = {}
    for ax in fig.axes:
        label_of = {}
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            style = (matplotlib.colors.to_hex(line.get_color()), line.get_linestyle(), line.get_marker())
            if label_of.setdefault(style, label) != label:
                problems.append(f"{label!r} and {label_of[style]!r} share colour, dash and marker {style}")
            if style_of.setdefault(label, style) != style:
                problems.append(f"{label!r} is drawn as {style} and as {style_of[label]}")
    return problems


@pytest.fixture(autouse=True)
def figures_checked(monkeypatch):
    """Every figure any test saves through :func:`jaxprune.plotting.save` (every experiment's, from the tiny runs
    the tests make) must pass :func:`figure_problems`."""
    save = plotting.save

    def checked(fig, path):
        problems = figure_problems(fig)
        save(fig, path)
        assert not problems, f"{path}: " + "; ".join(problems)

    monkeypatch.setattr(plotting, "save", checked)
