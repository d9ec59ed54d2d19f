"""Compare finished runs: ``python -m jaxprune.report runs/a runs/b ... [--out DIR]`` (or a glob, ``'runs/*'``).

Reads each workdir's ``config.json`` and ``results.json`` (any experiment) and writes into ``--out`` (default:
the current directory)

- ``report.md``: one markdown table, a row per run and method: the config keys that differ between the runs, the
  experiment's headline metric at each sparsity as mean [95% Student-t interval over seeds] (n seeds);
- ``report.csv``: the same numbers, one line per run, method and sparsity (mean, interval ends, n);
- ``report.png``: every run's methods overlaid against density, one panel per headline metric.

The headline metric of each experiment (:data:`HEADLINES`): test accuracy (irp, pai, autosparse), the memorized
fraction (memorization), corr(f(x_i), z_i) at convergence (noise_correlation), I(m; D | W) in bits
(mutual_information, its per-seed estimates), the round-end correlation with the noise through IMP
(noise_correlation_curve), the toy's exact I(m; D | init) in bits (toy_mutual_information, one value). Seeds a run
lists as failed are left out. A workdir with a config but no results.json is listed as not finished; a path that is
no workdir is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

import numpy as np
from scipy import stats

from jaxprune import plotting
from jaxprune import workdir as wd
from jaxprune.config import RUN_KEYS
from jaxprune.errors import ConfigError

CONFIDENCE = 0.95
UNFINISHED = "not finished (no results.json)"


def _without(values, failed) -> np.ndarray:
    """Per-seed ``values`` (seed axis first) as floats (None → NaN) without the seeds listed in ``failed``."""
    values = np.asarray(values, dtype=np.float64)
    return np.delete(values, [f if isinstance(f, int) else f["seed"] for f in failed], axis=0)


def _rows_of(metric: str):
    """Extractor for experiments whose ``results`` rows hold ``method``, ``sparsity`` and per-seed ``metric``."""
    return lambda r: [(row["method"], row["sparsity"], _without(row[metric], row.get("failed_seeds", [])))
                      for row in r["results"]]


def _irp_rows(r: dict) -> list:
    accuracy = _without(r["test_accuracy"], r["failed_seeds"])  # [seed, round]
    return [("irp", 1.0 - d, accuracy[:, i]) for i, d in enumerate(r["density_per_round"])]


def _mi_rows(r: dict) -> list:
    return [(m, r["design"]["sparsity"], np.array([s["bits"] for s in v["per_seed"]], dtype=np.float64))
            for m, v in r["methods"].items()]


def _curve_rows(r: dict) -> list:
    return [("imp", 1.0 - p["density"], np.asarray(p["paper_correlation_per_seed"], np.float64)) for p in r["peaks"]]


def _toy_rows(r: dict) -> list:
    """One value per (method, pruned count): the toy's MI is one number, not a per-seed estimate."""
    return [(m, k / r["num_params"], np.array([b])) for m, bits in r["mi_bits"].items() for k, b in enumerate(bits)]


# experiment: (headline metric, results.json -> [(method, sparsity, per-seed values)]).
HEADLINES = {
    "irp": ("test accuracy", _irp_rows),
    "pai": ("test accuracy", _rows_of("test_accuracy")),
    "memorization": ("memorized fraction", _rows_of("train_accuracy")),
    "noise_correlation": ("noise correlation", _rows_of("correlation")),
    "mutual_information": ("I(m; D | W) bits", _mi_rows),
    "autosparse": ("test accuracy", _rows_of("test_accuracy")),
    "noise_correlation_curve": ("round-end (1/n) Σ (f − f̄) z", _curve_rows),
    "toy_mutual_information": ("I(m; D | init) bits", _toy_rows),
}


def mean_interval(values) -> tuple[float, float, float, int]:
    """(mean, lower, upper, n) over the finite ``values``: mean ± t_{(1+c)/2, n-1} · s / √n, s the sample standard
    deviation, c = CONFIDENCE; the ends are NaN for n < 2, everything for n = 0."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def workdirs(args: list[str]) -> list[str]:
    """The workdirs named by ``args`` (globs expanded, in order, each once); ConfigError for a path that is none."""
    paths = []
    for arg in args:
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        if not matches:
            raise ConfigError(f"{arg}: matches no path")
        for path in matches:
            if not os.path.isdir(path):
                raise ConfigError(f"{path}: no such directory")
            if not os.path.exists(os.path.join(path, wd.CONFIG)):
                inner = glob.glob(os.path.join(path, "*", wd.CONFIG))
                hint = f"; it holds workdirs: {os.path.join(path, '*')}" if inner else ""
                raise ConfigError(f"{path}: not a jaxprune workdir (no {wd.CONFIG}){hint}")
            if path not in paths:
                paths.append(path)
    return paths


def _read(path: str) -> dict:
    try:
        return wd.read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def load(workdir: str) -> dict:
    """{workdir, config, finished, experiment, metric, rows: [(method, sparsity, (mean, lower, upper, n))]}."""
    config = _read(os.path.join(workdir, wd.CONFIG))
    run = {"workdir": workdir, "config": config, "experiment": config.get("experiment"), "finished": False,
           "metric": "", "rows": []}
    results_path = os.path.join(workdir, wd.RESULTS)
    if not os.path.exists(results_path):
        return run
    results = _read(results_path)
    if results.get("experiment") not in HEADLINES:
        raise ConfigError(f"{results_path}: experiment {results.get('experiment')!r} has no headline metric here; "
                          f"known: {', '.join(HEADLINES)}")
    metric, extract = HEADLINES[results["experiment"]]
    try:
        rows = [(method, float(s), mean_interval(v)) for method, s, v in extract(results)]
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ConfigError(f"{results_path}: not the results of a {results['experiment']} run "
                          f"({type(e).__name__}: {e})") from None
    return {**run, "finished": True, "metric": metric, "rows": rows}


def _flat(config: dict, prefix: str = "") -> dict:
    """{dotted key: value as text} of a config dict (strings bare, other values as JSON), ``RUN_KEYS`` left out."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key not in RUN_KEYS:
            out[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return out


def differing_keys(runs: list[dict]) -> list[str]:
    """Config keys (dotted for nested ones) that every run has, with values not the same in all of them; the
    ``experiment`` (a column of its own) and ``RUN_KEYS`` left out."""
    flats = [_flat(r["config"]) for r in runs]
    shared = sorted(set.intersection(*map(set, flats)) - {"experiment"}) if flats else []
    return [k for k in shared if len({f[k] for f in flats}) > 1]


def _cell(summary: tuple) -> str:
    mean, lower, upper, n = summary
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{mean:.4f} (n=1)"
    return f"{mean:.4f} [{lower:.4f}, {upper:.4f}] (n={n})"


def markdown(runs: list[dict], keys: list[str]) -> str:
    """The report table: a row per (run, method), a column per sparsity any run has."""
    sparsities = sorted({s for r in runs for _, s, _ in r["rows"]})
    header = ["run", "experiment", *keys, "method", "metric", *[f"sparsity {s:g}" for s in sparsities]]
    lines = [header, ["---"] * len(header)]
    for r in runs:
        prefix = [f"`{r['workdir']}`", r["experiment"], *[_flat(r["config"])[k] for k in keys]]
        if not r["finished"]:
            lines.append([*prefix, UNFINISHED, ""] + [""] * len(sparsities))
        for method in dict.fromkeys(m for m, _, _ in r["rows"]):
            cells = {s: _cell(v) for m, s, v in r["rows"] if m == method}
            lines.append([*prefix, method, r["metric"], *[cells.get(s, "") for s in sparsities]])
    table = "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines)
    return (f"# Run report\n\nHeadline metric of each run: mean [{CONFIDENCE:.0%} CI], the Student-t interval over "
            f"seeds (n = seeds with a finite value).\n\n{table}\n")


def write_csv(path: str, runs: list[dict], keys: list[str]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["run", "status", "experiment", *keys, "method", "metric", "sparsity", "mean",
                      f"ci{CONFIDENCE * 100:g}_lower", f"ci{CONFIDENCE * 100:g}_upper", "n"])
        for r in runs:
            prefix = [r["workdir"], "finished" if r["finished"] else "unfinished", r["experiment"],
                      *[_flat(r["config"])[k] for k in keys]]
            if not r["finished"]:
                out.writerow([*prefix] + [""] * 7)
            for method, sparsity, (mean, lower, upper, n) in r["rows"]:
                out.writerow([*prefix, method, r["metric"], sparsity, mean, lower, upper, n])


def figure(path: str, runs: list[dict]) -> None:
    """One panel per headline metric: each (run, method) against density, its interval shaded; a method in its
    colour in every run (:func:`jaxprune.plotting.styles`), the runs told apart by dash and marker."""
    finished = [r for r in runs if r["rows"]]
    metrics = list(dict.fromkeys(r["metric"] for r in finished))
    name = lambda r, method: method if len(runs) == 1 else f"{method}[{r['workdir']}]"  # noqa: E731
    style = plotting.styles([name(r, m) for r in finished for m, _, _ in r["rows"]])
    fig, axes = plotting.figure(len(metrics))
    for ax, metric in zip(axes[0], metrics):
        densities = []
        for r in (r for r in finished if r["metric"] == metric):
            for method in dict.fromkeys(m for m, _, _ in r["rows"]):
                points = sorted((1.0 - s, v) for m, s, v in r["rows"] if m == method)
                x = np.array([d for d, _ in points])
                mean, lower, upper = (np.array([v[i] for _, v in points]) for i in range(3))
                label = name(r, method)
                if len(x) > 1:
                    ax.plot(x, mean, markersize=3, label=label, **style[label])
                    ax.fill_between(x, lower, upper, color=style[label]["color"], alpha=0.2, linewidth=0)
                else:  # one sparsity: a point with its interval as an error bar
                    ax.errorbar(x, mean, yerr=np.nan_to_num([mean - lower, upper - mean]), capsize=3, label=label,
                                **style[label])
                densities += list(x)
        ax.set_xscale("log")
        plotting.label_densities(ax, densities)
        ax.invert_xaxis()
        ax.set(xlabel="remaining weights (density)", ylabel=metric,
               title=f"mean, {CONFIDENCE:.0%} CI over seeds (shaded)")
        ax.grid(alpha=0.3, which="both")
    plotting.legend_outside(fig)
    plotting.save(fig, path)


def report(args: list[str], out: str) -> tuple[list[dict], list[str]]:
    """Write report.md, report.csv and (with a finished run) report.png into ``out``; (the runs, the paths)."""
    runs = [load(w) for w in workdirs(args)]
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out={out}: exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    keys = differing_keys(runs)
    paths = [os.path.join(out, name) for name in ("report.md", "report.csv", "report.png")]
    with open(paths[0], "w") as f:
        f.write(markdown(runs, keys))
    write_csv(paths[1], runs, keys)
    if any(r["rows"] for r in runs):
        figure(paths[2], runs)
    else:
        paths.pop()
    return runs, paths


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints the whole usage)
        print(f"jaxprune.report: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m jaxprune.report", description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="finished (or unfinished) workdirs, or globs of them")
    parser.add_argument("--out", default=".", help="directory for report.md, report.csv, report.png (default: .)")
    args = parser.parse_args(argv)
    try:
        runs, paths = report(args.workdirs, args.out)
    except ConfigError as e:
        parser.error(str(e))
    for r in runs:
        if not r["finished"]:
            print(f"{r['workdir']}: {UNFINISHED}")
    print("wrote " + ", ".join(paths))


if __name__ == "__main__":
    main()
