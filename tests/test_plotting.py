"""Figures: every method keeps one style in every figure and no two lines of a figure look alike; the busiest
figures the experiments draw pass the mechanical check of conftest (which every figure of the suite passes)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import figure_problems

from jaxprune import plotting, stats

ROWS = [{"method": m, "sparsity": s, "acc": np.array(v)} for m, s, v in [
        ("imp", 0.9, [0.8, 0.82, 0.85]), ("random", 0.9, [0.6, 0.7, 0.62]), ("snip", 0.9, [0.81, np.nan, np.nan]),
        ("imp", 0.5, [0.88, 0.9, 0.89]), ("random", 0.5, [0.87, 0.91, 0.88])]]
MEMORIZATION = ("imp", "magnitude_after", "magnitude_after_no_rewind", "snip", "grasp", "synflow", "random")
REGISTERED = ("npb", "iterative_snip", "force", "prospr", "my_scorer", "another_scorer", "third_scorer")
SPARSITIES = (0.5, 0.9, 0.98)


def curves(labels, rng):
    return {label: ([1 - s for s in SPARSITIES], rng.uniform(size=(4, len(SPARSITIES)))) for label in labels}


def test_a_method_keeps_its_style_whatever_else_the_figure_holds():
    alone = plotting.styles(["imp", "synflow"])
    crowded = plotting.styles([*REGISTERED, *MEMORIZATION, "synflow+shuffle", "imp+rewire"])
    assert alone["imp"] == crowded["imp"] and alone["synflow"] == crowded["synflow"]
    assert alone["imp"]["color"] != alone["synflow"]["color"]


def test_ablations_keep_their_methods_colour_with_another_dash_and_marker():
    style = plotting.styles(["snip", "snip+shuffle", "snip+swap", "snip+rewire", "autosparse", "autosparse[erk]"])
    for variant, method in (("snip+shuffle", "snip"), ("snip+swap", "snip"), ("snip+rewire", "snip"),
                            ("autosparse[erk]", "autosparse")):
        assert style[variant]["color"] == style[method]["color"]
        assert style[variant]["linestyle"] != "-" and style[method]["linestyle"] == "-"
    assert len({tuple(s.values()) for s in style.values()}) == len(style)


def test_unnamed_methods_get_distinct_styles_deterministically():
    """More user-registered methods than the extra palette has colours: still no two alike, and the same twice."""
    labels = [f"user_method_{i}" for i in range(len(plotting.EXTRA_COLORS) + 5)] + list(MEMORIZATION)
    first, second = plotting.styles(labels), plotting.styles(list(reversed(labels)))
    assert first == second
    assert len({tuple(s.values()) for s in first.values()}) == len(labels)
    assert not {s["color"] for s in first.values() if s["color"] in plotting.METHOD_COLORS.values()} - {
        plotting.METHOD_COLORS[m] for m in MEMORIZATION}


def test_busiest_lines_figure_splits_methods_from_their_controls(tmp_path):
    """noise_correlation's figure with every registered method and the shuffle controls: more lines than a panel
    holds, so the controls go in a second panel; the conftest check runs on save."""
    labels = [*MEMORIZATION, *REGISTERED, *[f"{m}+shuffle" for m in MEMORIZATION if m != "random"]]
    assert [title for title, _ in plotting.panels(labels)] == ["methods", "variants (dashed) beside their methods"]
    flagged = {"imp": np.ones((4, len(SPARSITIES)), bool)}
    plotting.lines_vs_density(str(tmp_path / "lines.png"), curves(labels, np.random.default_rng(0)), flagged=flagged,
                              ylabel="corr(f(x_i), z_i) at convergence, a label long enough to need two lines",
                              title="Noise fitted, σ = 0.5 (± std; x: hit max_epochs), a title long enough to wrap")
    assert (tmp_path / "lines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("pairs", [10, 1])
def test_paired_differences_are_a_grid_of_panels(tmp_path, pairs):
    """Many pairs at 3 sparsities over 2 metrics (noise_correlation has 19 pairs: 114 comparisons) as panels, one
    per pair and metric."""
    rng = np.random.default_rng(0)
    methods = [f"{m}+shuffle" for m in MEMORIZATION] + list(MEMORIZATION)
    rows = [{"method": m, "sparsity": s, "corr": rng.normal(size=4), "bs": rng.normal(size=4)}
            for m in methods for s in SPARSITIES]
    chosen = [(a, b) for a in methods[:7] for b in methods[7:]][:pairs]
    comparisons = [c for metric in ("corr", "bs") for c in stats.comparisons(rows, metric, chosen)]
    path = tmp_path / "paired.png"
    plotting.paired_differences(str(path), comparisons, title="Noise fitted: paired differences over seeds")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_differences_with_and_without_intervals(tmp_path):
    comparisons = stats.comparisons(ROWS, "acc", [("imp", "random"), ("snip", "random")])
    assert [c["verdict"] for c in comparisons] == ["inconclusive", "A > B", "inconclusive"]
    plotting.paired_differences(str(tmp_path / "comparisons.png"), comparisons, title="test accuracy")
    plotting.paired_difference_grid(str(tmp_path / "grid.png"), comparisons, title="many against few")


def test_the_figure_check_finds_lookalike_lines_clipped_text_and_tall_canvases():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], color="tab:blue", label="imp")
    ax.plot([0, 1], [1, 0], color="tab:blue", label="synflow")
    ax.set_title("a title far too long for a four inch canvas, so its ends are cut off on both sides " * 2)
    assert len(figure_problems(fig)) == 2
    tall = plt.figure(figsize=(2, 7))
    assert [p for p in figure_problems(tall) if "taller" in p]
    plt.close("all")
