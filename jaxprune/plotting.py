"""Figures every experiment writes: lines with a band over seeds, histograms, paired differences. PNG via
matplotlib (Agg), constrained layout, legends outside the axes.

Every line of a method is drawn in that method's style (:func:`styles`), the same in every figure of every
experiment: the colour names the method (:data:`METHOD_COLORS`; methods of a similar hue also differ in marker,
:data:`METHOD_MARKERS`); a variant of it — an ablation ``snip+shuffle``
or a configured variant ``autosparse[erk]`` — keeps its method's colour and changes dash and marker. A method
the palette does not name (e.g. one a user registers) gets a colour of :data:`EXTRA_COLORS` chosen from its name
alone, moved on only when another line of the same figure holds it; no two lines of a figure share colour, dash
and marker. A figure with more lines than :data:`MAX_LINES_PER_PANEL` puts the variants in a panel of their own.
"""
from __future__ import annotations

import math
import re
import textwrap
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter  # noqa: E402

METHOD_COLORS = {  # one colour per method, in every figure
    "imp": "#1f77b4", "magnitude_after": "#17becf", "magnitude_after_no_rewind": "#393b79", "random": "#7f7f7f",
    "magnitude": "#8c564b", "snip": "#2ca02c", "grasp": "#d62728", "synflow": "#ff7f0e", "autosparse": "#9467bd",
    "dense": "#000000", "npb": "#e377c2", "iterative_snip": "#bcbd22", "force": "#8c6d31", "prospr": "#637939",
}
METHOD_MARKERS = {"iterative_snip": "D", "force": "s", "prospr": "^"}  # near another method's hue: own marker too
EXTRA_COLORS = ("#e7969c", "#6b6ecf", "#b5cf6b", "#e7ba52", "#ce6dbd", "#3182bd", "#31a354", "#756bb1",
                "#fd8d3c", "#843c39", "#636363", "#9c9ede")  # methods the palette does not name
VARIANT_STYLES = {"shuffle": ("--", "s"), "reinit": (":", "^"), "invert": ("-.", "v"), "swap": ("--", "D"),
                  "rewire": (":", "P")}  # ablation -> (dash, marker); other variants take the next free pair
DASHES = ("--", ":", "-.")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p")
MAX_LINES_PER_PANEL = 8
DPI = 120


def method_of(label: str) -> tuple[str, str]:
    """(method, variant) of a line label: ``'snip+shuffle'`` → ('snip', 'shuffle'), ``'autosparse[erk]'`` →
    ('autosparse', '[erk]'), ``'imp'`` → ('imp', '')."""
    method, variant = re.fullmatch(r"([^+\[]*)\+?(.*)", label).groups()
    return (method, variant) if method else (label, "")


def styles(labels) -> dict[str, dict]:
    """``{label: {'color', 'linestyle', 'marker'}}`` for the lines of one figure (module docstring): fixed per
    method and variant where the palettes name them, and distinct across ``labels`` in any case; a function of the
    set of labels, not of their order."""
    methods = list(dict.fromkeys(method_of(label)[0] for label in labels))
    color = {m: METHOD_COLORS[m] for m in methods if m in METHOD_COLORS}
    for m in sorted(set(methods) - set(color)):
        start = zlib.crc32(m.encode()) % len(EXTRA_COLORS)
        free = [EXTRA_COLORS[(start + i) % len(EXTRA_COLORS)] for i in range(len(EXTRA_COLORS))]
        color[m] = next((c for c in free if c not in color.values()), free[0])  # reused: the marker tells apart
    out, taken = {}, set()
    for label in sorted(set(labels), key=lambda label: (bool(method_of(label)[1]), label)):  # not by order
        method, variant = method_of(label)
        first = ("-", METHOD_MARKERS.get(method, "o")) if not variant else VARIANT_STYLES.get(variant,
                                                                                           (DASHES[0], MARKERS[1]))
        candidates = [first] + [(d, m) for d in (DASHES if variant else ("-",)) for m in MARKERS]
        dash, marker = next((c for c in candidates if (color[method], *c) not in taken), first)
        taken.add((color[method], dash, marker))
        out[label] = {"color": color[method], "linestyle": dash, "marker": marker}
    return out


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.6, **kwargs):
    """(figure, axes [nrows, ncols]) of panels ``width`` × ``height`` inches each, in constrained layout."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained",
                        **kwargs)


def legend_outside(fig, axes=None, **kwargs) -> None:
    """One legend for the figure, right of its panels: every labelled artist of ``axes`` (default: all), each
    label once."""
    entries = {}
    for ax in fig.axes if axes is None else np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        widen_for(fig, fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8,
                                  **kwargs))


def widen_for(fig, legend) -> None:
    """Widen ``fig`` by the width of its outside ``legend``, so the panels keep theirs and the legend fits."""
    fig.set_figwidth(fig.get_figwidth() + legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi)


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (titles and labels that would overrun)."""
    return textwrap.fill(text, width, break_long_words=False)


def band(ax, x, values, label: str, **kwargs) -> None:
    """Mean over seeds (axis 0 of ``values``) as a line, ±1 standard deviation as a shaded band.

    NaN entries (e.g. failed seeds) are left out of the mean and deviation.
    """
    values = np.asarray(values, dtype=np.float64)
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    (line,) = ax.plot(x, mean, **{"marker": "o", "markersize": 3, **kwargs}, label=label)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def save(fig, path: str) -> None:
    """Write ``fig`` as a PNG (constrained layout, so nothing is cut at the edge) and close it."""
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    fig.savefig(path, dpi=DPI)
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


def panels(labels: list[str]) -> list[tuple[str, list[str]]]:
    """(panel title, labels) of each panel: one panel, or — past :data:`MAX_LINES_PER_PANEL` lines with variants
    among them — the methods, then the variants each beside its method."""
    variants = [label for label in labels if method_of(label)[1]]
    if not variants or len(labels) <= MAX_LINES_PER_PANEL:
        return [("", labels)]
    plain = [label for label in labels if label not in variants]
    beside = [label for m in plain for label in labels if label == m or method_of(label)[0] == m and label in variants]
    orphans = [label for label in variants if label not in beside]
    return [("methods", plain), ("variants (dashed) beside their methods", beside + orphans)]


def lines_vs_density(path: str, curves: dict, *, ylabel: str, title: str, xlabel: str = "remaining weights (density)",
                     flagged: dict | None = None):
    """One band per label over a log-scaled density axis; ``curves[label] = (density [n], values [seeds, n])``,
    each in its method's style (:func:`styles`), split into panels past :data:`MAX_LINES_PER_PANEL` lines
    (:func:`panels`). ``flagged[label]`` (bool [seeds, n]), if given, marks those seeds' values with a black x
    (e.g. runs that hit a cap)."""
    style, layout = styles(list(curves)), panels(list(curves))
    fig, axes = figure(len(layout), sharey=True)
    for ax, (panel_title, labels) in zip(axes[0], layout):
        for label in labels:
            density, values = curves[label]
            band(ax, np.asarray(density), values, label, **style[label])
            marks = np.asarray((flagged or {}).get(label, np.zeros(np.shape(values), bool)), bool)
            if marks.any():
                ax.plot(np.broadcast_to(np.asarray(density), marks.shape)[marks], np.asarray(values)[marks], "x",
                        color="black", markersize=5)
        ax.set_xscale("log")
        label_densities(ax, [d for label in labels for d in np.ravel(curves[label][0])])
        ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(wrap(ylabel, 45))
    fig.suptitle(wrap(title, 50 * len(layout)), fontsize=11)
    legend_outside(fig)
    save(fig, path)


def histogram(path: str, counts: dict, *, bins, xlabel: str, title: str) -> None:
    """Overlaid histograms; ``counts[label]`` is a flat array of values."""
    fig, axes = figure()
    ax, style = axes[0][0], styles(list(counts))
    for label, values in counts.items():
        ax.hist(np.asarray(values).ravel(), bins=bins, alpha=0.6, label=label, color=style[label]["color"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(wrap(title, 50))
    ax.set_yscale("log")
    if len(counts) > 1:
        legend_outside(fig)
    save(fig, path)


VERDICT_COLORS = {"A > B": "tab:green", "A < B": "tab:red", "inconclusive": "tab:gray"}


def interval_note(comparisons: list[dict]) -> str:
    """'95% t interval' (every interval the comparisons use)."""
    return ", ".join(sorted({f"{c['confidence']:.0%} {c['interval']}" for c in comparisons})) + " interval"


def paired_difference_grid(path: str, comparisons: list[dict], *, title: str) -> None:
    """Many methods A against a few methods B (entries of :func:`jaxprune.stats.comparisons`): one panel per B,
    one row per A, and per sparsity one dot (mean paired difference A − B) with its interval, offset within the
    row and coloured by sparsity; hollow where the interval contains 0 (inconclusive). Readable where
    :func:`paired_differences` would need a panel for every (A, B)."""
    bs = list(dict.fromkeys(c["b"] for c in comparisons))
    As = list(dict.fromkeys(c["a"] for c in comparisons))
    sparsities = sorted({c["sparsity"] for c in comparisons})
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(sparsities), 1)))
    fig, axes = figure(len(bs), width=2.6 + 3.5 / len(bs), height=1.2 + 0.45 * len(As), sharey=True)  # + labels
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
    metric = comparisons[0]["metric"] if comparisons else ""
    fig.supxlabel(f"paired difference in {metric} ({interval_note(comparisons)}; hollow: contains 0)", fontsize=9)
    dots = [Line2D([], [], color=colors[k], marker="o", linestyle="") for k in range(len(sparsities))]
    widen_for(fig, fig.legend(dots, [f"sparsity {s:g}" for s in sparsities], fontsize=7, loc="outside right upper"))
    fig.suptitle(wrap(title, 30 + 25 * len(bs)), fontsize=10)
    save(fig, path)


def paired_differences(path: str, comparisons: list[dict], *, title: str, columns: int = 4) -> None:
    """One panel per (metric, A − B) of the comparisons (entries of :func:`jaxprune.stats.comparisons`), in a grid
    ``columns`` wide: per sparsity the mean paired difference A − B as a dot with its interval as a bar, coloured
    by verdict (green A > B, red A < B, grey inconclusive), and a line at 0. A comparison without an interval
    (fewer than two pairs) is a hollow marker; none without a mean."""
    groups = {}
    for c in comparisons:
        groups.setdefault((c["metric"], c["a"], c["b"]), []).append(c)
    ncols = max(min(columns, len(groups)), 1)
    nrows = max(math.ceil(len(groups) / ncols), 1)
    fig, axes = figure(ncols, nrows, width=2.4, height=1.9 + 1.2 / nrows)  # + room for the figure's labels
    one_metric = len({metric for metric, _, _ in groups}) == 1
    for ax, ((metric, a, b), group) in zip(axes.flat, groups.items()):
        for x, c in enumerate(group):
            if c["mean_difference"] is None:
                continue
            color, mean = VERDICT_COLORS[c["verdict"]], c["mean_difference"]
            lower, upper = (c["lower"], c["upper"]) if c["lower"] is not None else (mean, mean)
            ax.errorbar(x, mean, yerr=[[mean - lower], [upper - mean]], fmt="o", color=color, capsize=3,
                        markersize=4, mfc="none" if c["lower"] is None else color)
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(group)), [f"{c['sparsity']:g}" for c in group])
        ax.set_xlim(-0.5, len(group) - 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
        ax.set_title(("" if one_metric else f"{metric}\n") + f"{a}\n− {b}", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes.flat[len(groups):]:
        ax.remove()
    fig.supxlabel("sparsity", fontsize=9)
    fig.supylabel(f"paired difference A − B ({interval_note(comparisons)})", fontsize=9)
    shown = [v for v in VERDICT_COLORS if any(c["verdict"] == v for c in comparisons)]
    widen_for(fig, fig.legend([Line2D([], [], color=VERDICT_COLORS[v], marker="o", linestyle="") for v in shown],
                              shown, fontsize=7, loc="outside right upper"))
    fig.suptitle(wrap(title, 25 * ncols), fontsize=10)
    save(fig, path)


def errorbars_vs_sparsity(path: str, curves: dict, *, ylabel: str, title: str) -> None:
    """One line per label over a linear sparsity axis, as No Free Prune draws its Figure 1: at each sparsity the
    mean over seeds with ±1 standard error of the mean (sample std / √n) as error bars; ``curves[label] =
    (sparsity [n], values [seeds, n])``, each in its method's style (:func:`styles`), the axis running to sparsity
    1 as the paper's does. NaN entries (failed seeds) are left out of the mean, the std and n."""
    style = styles(list(curves))
    fig, axes = figure()
    ax = axes[0, 0]
    for label, (sparsity, values) in curves.items():
        values = np.asarray(values, dtype=np.float64)
        count = np.sum(np.isfinite(values), axis=0)
        mean = np.nanmean(values, axis=0)
        sem = np.nanstd(values, axis=0, ddof=1) / np.sqrt(count) if values.shape[0] > 1 else np.zeros_like(mean)
        ax.errorbar(np.asarray(sparsity), mean, yerr=sem, markersize=3, capsize=2, label=label, **style[label])
    ax.set_xlim(right=1.0)
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel(ylabel)
    ax.set_title(wrap(title, 60), fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(fig)
    save(fig, path)
