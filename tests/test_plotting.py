"""Figures are written as PNGs (smoke tests; what they show is checked where their data is computed)."""
import numpy as np

from jaxprune import plotting, stats

ROWS = [{"method": m, "sparsity": s, "acc": np.array(v)} for m, s, v in [
        ("imp", 0.9, [0.8, 0.82, 0.85]), ("random", 0.9, [0.6, 0.7, 0.62]), ("snip", 0.9, [0.81, np.nan, np.nan]),
        ("imp", 0.5, [0.88, 0.9, 0.89]), ("random", 0.5, [0.87, 0.91, 0.88])]]


def test_paired_differences_writes_a_png_with_and_without_intervals(tmp_path):
    comparisons = stats.comparisons(ROWS, "acc", [("imp", "random"), ("snip", "random")])
    assert [c["verdict"] for c in comparisons] == ["inconclusive", "A > B", "inconclusive"]
    path = tmp_path / "comparisons.png"
    plotting.paired_differences(str(path), comparisons, title="test accuracy, paired over seeds")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_difference_grid_writes_a_png_with_a_panel_per_method_b(tmp_path):
    comparisons = stats.comparisons(ROWS, "acc", [("imp", "random"), ("snip", "random"), ("imp", "snip")])
    path = tmp_path / "grid.png"
    plotting.paired_difference_grid(str(path), comparisons, title="many against few")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
