"""Figures every experiment writes: lines with a band over seeds, and histograms. PNG via matplotlib (Agg)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter  # noqa: E402


def band(ax, x, values, label: str, **kwargs) -> None:
    """Mean over seeds (axis 0 of ``values``) as a line, ±1 standard deviation as a shaded band.

    NaN entries (e.g. failed seeds) are left out of the mean and deviation.
    """
    values = np.asarray(values, dtype=np.float64)
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label, **kwargs)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label_densities(ax, densities, most: int = 8) -> None:
    """Tick labels of a log density axis: the densities themselves when there are at most ``most`` distinct
    ones, else ``most`` of them evenly spaced in log; no labels on minor ticks (they overlap)."""
    ticks = np.unique(np.round(np.asarray(densities, dtype=np.float64), 6))
    if ticks.size > most:
        ticks = ticks[np.unique(np.round(np.linspace(0, ticks.size - 1, most)).astype(int))]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def lines_vs_density(path: str, curves: dict, *, ylabel: str, title: str, xlabel: str = "remaining weights (density)",
                     flagged: dict | None = None):
    """One band per label over a log-scaled density axis; ``curves[label] = (density [n], values [seeds, n])``.
    ``flagged[label]`` (bool [seeds, n]), if given, marks those seeds' values with an x (e.g. runs that hit a cap)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (density, values) in curves.items():
        band(ax, np.asarray(density), values, label, linestyle="--" if "+" in label else "-")  # ablations dashed
        marks = np.asarray((flagged or {}).get(label, np.zeros(np.shape(values), bool)), bool)
        if marks.any():
            ax.plot(np.broadcast_to(np.asarray(density), marks.shape)[marks], np.asarray(values)[marks], "x",
                    color="black", markersize=5)
    ax.set_xscale("log")
    label_densities(ax, [d for density, _ in curves.values() for d in np.ravel(density)])
    ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, path)


def histogram(path: str, counts: dict, *, bins, xlabel: str, title: str) -> None:
    """Overlaid histograms; ``counts[label]`` is a flat array of values."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in counts.items():
        ax.hist(np.asarray(values).ravel(), bins=bins, alpha=0.6, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.set_yscale("log")
    if len(counts) > 1:
        ax.legend(fontsize=8)
    save(fig, path)


VERDICT_COLORS = {"A > B": "tab:green", "A < B": "tab:red", "inconclusive": "tab:gray"}


def comparison_label(c: dict) -> str:
    """'a − b @ sparsity s (n=…)' for one entry of :func:`jaxprune.stats.comparisons` (', no interval' if n < 2)."""
    missing = ", no interval" if c["lower"] is None else ""
    return f"{c['a']} − {c['b']} @ sparsity {c['sparsity']:g} (n={c['num_pairs']}{missing})"


def paired_difference_grid(path: str, comparisons: list[dict], *, title: str) -> None:
    """Many methods A against a few methods B (entries of :func:`jaxprune.stats.comparisons`): one panel per B,
    one row per A, and per sparsity one dot (mean paired difference A − B) with its interval, offset within the
    row and coloured by sparsity; hollow where the interval contains 0 (inconclusive). Readable where
    :func:`paired_differences` would need a row for every (A, B, sparsity)."""
    bs = list(dict.fromkeys(c["b"] for c in comparisons))
    As = list(dict.fromkeys(c["a"] for c in comparisons))
    sparsities = sorted({c["sparsity"] for c in comparisons})
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(sparsities), 1)))
    fig, axes = plt.subplots(1, len(bs), figsize=(2.6 * len(bs) + 3.5, 1.2 + 0.45 * len(As)), sharey=True,
                             squeeze=False)
    for ax, b in zip(axes[0], bs):
        for c in (c for c in comparisons if c["b"] == b and c["mean_difference"] is not None):
            k = sparsities.index(c["sparsity"])
            y = As.index(c["a"]) + (k - (len(sparsities) - 1) / 2) * 0.22
            lower, upper = (c["lower"], c["upper"]) if c["lower"] is not None else (c["mean_difference"],) * 2
            ax.errorbar(c["mean_difference"], y, xerr=[[c["mean_difference"] - lower], [upper - c["mean_difference"]]],
                        fmt="o", color=colors[k], mfc=colors[k] if c["verdict"] != "inconclusive" else "none",
                        capsize=2, markersize=4)
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"A − {b}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(As)), As, fontsize=7)
    axes[0][0].set_ylim(len(As) - 0.5, -0.5)
    c0 = comparisons[0] if comparisons else {"metric": "", "confidence": 0.95, "interval": "t"}
    fig.supxlabel(f"paired difference in {c0['metric']} ({c0['confidence']:.0%} {c0['interval']} interval; "
                  "hollow: contains 0)", fontsize=9)
    axes[0][-1].legend([Line2D([], [], color=colors[k], marker="o", linestyle="") for k in range(len(sparsities))],
                       [f"sparsity {s:g}" for s in sparsities], fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def paired_differences(path: str, comparisons: list[dict], *, title: str, xlabel: str | None = None) -> None:
    """One row per comparison (entries of :func:`jaxprune.stats.comparisons`): the mean paired difference A − B
    as a dot with its interval as a bar, coloured by verdict (green A > B, red A < B, grey inconclusive), and a
    line at 0. A comparison without an interval (fewer than two pairs) is a hollow marker; none without a mean."""
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.35 * max(len(comparisons), 1)))
    for y, c in enumerate(comparisons):
        color = VERDICT_COLORS[c["verdict"]]
        if c["mean_difference"] is None:
            continue
        if c["lower"] is None:
            ax.plot(c["mean_difference"], y, "o", mfc="none", color=color)
            continue
        err = [[c["mean_difference"] - c["lower"]], [c["upper"] - c["mean_difference"]]]
        ax.errorbar(c["mean_difference"], y, xerr=err, fmt="o", color=color, capsize=3, markersize=4)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(comparisons)), [comparison_label(c) for c in comparisons], fontsize=8)
    ax.set_ylim(len(comparisons) - 0.5, -0.5)  # first comparison on top
    metrics = sorted({c["metric"] for c in comparisons})
    intervals = sorted({f"{c['confidence']:.0%} {c['interval']}" for c in comparisons})
    ax.set_xlabel(xlabel or f"paired difference A − B in {', '.join(metrics)} ({', '.join(intervals)} interval)")
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    shown = [v for v in VERDICT_COLORS if any(c["verdict"] == v for c in comparisons)]
    ax.legend([Line2D([], [], color=VERDICT_COLORS[v], marker="o", linestyle="") for v in shown], shown,
              fontsize=7, loc="best")
    save(fig, path)


def errorbars_vs_sparsity(path: str, curves: dict, *, ylabel: str, title: str) -> None:
    """One line per label over a linear sparsity axis, as No Free Prune draws its Figure 1: at each sparsity the
    mean over seeds with ±1 standard error of the mean (sample std / √n) as error bars; ``curves[label] =
    (sparsity [n], values [seeds, n])``. NaN entries (failed seeds) are left out of the mean, the std and n."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (sparsity, values) in curves.items():
        values = np.asarray(values, dtype=np.float64)
        count = np.sum(np.isfinite(values), axis=0)
        mean = np.nanmean(values, axis=0)
        sem = np.nanstd(values, axis=0, ddof=1) / np.sqrt(count) if values.shape[0] > 1 else np.zeros_like(mean)
        ax.errorbar(np.asarray(sparsity), mean, yerr=sem, marker="o", markersize=3, capsize=2, label=label,
                    linestyle="--" if "+" in label else "-")
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
