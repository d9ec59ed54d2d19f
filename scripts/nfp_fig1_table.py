"""The tables of a No Free Prune Fig. 1 run (docs/nfp_paper_figures.md): the headline metric per method at chosen
sparsities as mean ± standard error over the seeds (the paper's error bars), and IMP − each other method as paired
differences with 95% t intervals and verdicts (the run's ``comparisons``).

    python scripts/nfp_fig1_table.py runs/nfp_fig1a --sparsities 0.956 0.972 0.993
    python scripts/nfp_fig1_table.py runs/nfp_fig1a_sgd --against runs/nfp_fig1a   # an alternative setting

A sparsity is matched to the run's nearest one (within 0.001). Failed seeds (``failed_seeds``) are left out.
``--against BASE`` adds, per method and sparsity, this run − BASE paired over the seed ids both runs have
(``seed_ids``: with per-seed data, seed i has the same dataset, initial weights and keys in both), the question
"does this setting move the result?".
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jaxprune import stats


def nearest(values, target: float) -> float:
    best = min(values, key=lambda v: abs(v - target))
    if abs(best - target) > 1e-3:
        raise SystemExit(f"no sparsity within 0.001 of {target} in the run ({sorted(values)})")
    return best


def mean_se(values) -> str:
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    v = v[np.isfinite(v)]
    return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(v.size):.3f}" if v.size > 1 else "n/a"


def load(workdir: str) -> tuple[dict, str, list[dict]]:
    """(results.json, its headline metric, its rows other than dense)."""
    results = json.load(open(os.path.join(workdir, "results.json")))
    return results, results.get("metric", "train_accuracy"), [r for r in results["results"] if r["method"] != "dense"]


def against(workdir: str, base: str, sparsities, metric: str) -> None:
    """This run − ``base`` per method and sparsity, paired over the shared seed ids (95% t interval, verdict); a
    seed failed on either side drops its pair (:func:`jaxprune.stats.seed_values` marks it NaN)."""
    (ours, _, rows), (theirs, _, base_rows) = load(workdir), load(base)
    by_id = lambda results, row: dict(zip(results["seed_ids"], stats.seed_values(row, metric)))  # noqa: E731
    base_cell = {(r["method"], r["sparsity"]): r for r in base_rows}
    print(f"\nThis run − {base} in {metric}, paired over the seed ids both have (95% t interval, verdict):\n")
    print("| method | " + " | ".join(f"{s:.3f}" for s in sparsities) + " |\n|---|" + "---|" * len(sparsities))
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for s in sparsities:
            row = next(r for r in rows if r["method"] == m and r["sparsity"] == s)
            base_sparsities = {bs for bm, bs in base_cell if bm == m}
            other = base_cell[m, nearest(base_sparsities, s)] if base_sparsities else None
            a, b = by_id(ours, row), by_id(theirs, other) if other else {}
            shared = sorted(set(a) & set(b))
            c = stats.paired_difference([a[i] for i in shared], [b[i] for i in shared])
            if c["mean_difference"] is None:
                cells.append("n/a")
                continue
            interval = "no interval" if c["lower"] is None else f"[{c['lower']:+.3f}, {c['upper']:+.3f}]"
            cells.append(f"{c['mean_difference']:+.3f} {interval}, n={c['num_pairs']}: {stats.verdict(c)}")
        print(f"| {m} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.956, 0.972, 0.993])
    parser.add_argument("--against", metavar="BASE", help="a finished run to compare with, paired by seed id")
    args = parser.parse_args(argv)
    results, metric, rows = load(args.workdir)
    at = [nearest({r["sparsity"] for r in rows}, s) for s in args.sparsities]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["sparsity"]): r for r in rows}
    print(f"{metric}, mean ± standard error over {results['num_seeds']} seeds (mean epochs):\n")
    print("| method | " + " | ".join(f"{s:.3f}" for s in at) + " |\n|---|" + "---|" * len(at))
    for m in methods:
        print(f"| {m} | " + " | ".join(
            f"{mean_se(cell[m, s][metric])} ({np.mean(cell[m, s]['epochs']):.0f} ep)" for s in at) + " |")
    print(f"\nPaired differences A − B in {metric} (95% t interval over the seeds both finished):\n")
    print("| A − B | " + " | ".join(f"{s:.3f}" for s in at) + " |\n|---|" + "---|" * len(at))
    comparisons = {(c["a"], c["b"], c["sparsity"]): c for c in results["comparisons"] if c["metric"] == metric}
    for b in [m for m in methods if m != "imp"]:
        cells = []
        for s in at:
            c = comparisons.get(("imp", b, s))
            if c is None or c["mean_difference"] is None:
                cells.append("n/a")
            elif c["lower"] is None:
                cells.append(f"{c['mean_difference']:+.3f} (no interval, n={c['num_pairs']}): {c['verdict']}")
            else:
                cells.append(f"{c['mean_difference']:+.3f} [{c['lower']:+.3f}, {c['upper']:+.3f}]: {c['verdict']}")
        print(f"| imp − {b} | " + " | ".join(cells) + " |")
    if args.against:
        against(args.workdir, args.against, at, metric)


if __name__ == "__main__":
    main()
