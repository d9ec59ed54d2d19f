"""Agreement statistics between score vectors (survival counts, predicted scores), and paired comparisons of
two methods over the same seeds (mean difference with a t or bootstrap interval, the ``comparisons`` of results)."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from jaxprune.errors import ConfigError


def _moments(a: jax.Array, b: jax.Array) -> tuple[jax.Array, ...]:
    """Population (mean_a, mean_b, var_a, var_b, cov) of two vectors, in float32 (centred sums)."""
    a, b = jnp.ravel(a).astype(jnp.float32), jnp.ravel(b).astype(jnp.float32)
    mean_a, mean_b = jnp.mean(a), jnp.mean(b)
    da, db = a - mean_a, b - mean_b
    return mean_a, mean_b, jnp.mean(da * da), jnp.mean(db * db), jnp.mean(da * db)


def ccc(a: jax.Array, b: jax.Array) -> jax.Array:
    """Lin's (1989) concordance correlation 2 cov(a, b) / (var a + var b + (mean a - mean b)²), population moments.

    1 iff a = b; equals Pearson's r when the means and variances agree; NaN when both are the same constant.
    """
    mean_a, mean_b, var_a, var_b, cov = _moments(a, b)
    return 2 * cov / (var_a + var_b + (mean_a - mean_b) ** 2)


def average_ranks(a: jax.Array) -> jax.Array:
    """1-based ranks of the entries of a (flattened); tied entries share the mean of their ranks."""
    a = jnp.ravel(a)
    ordered = jnp.sort(a)
    below = jnp.searchsorted(ordered, a, side="left")
    at_or_below = jnp.searchsorted(ordered, a, side="right")
    return (below + at_or_below + 1) / 2


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman's ρ: Pearson's r = cov / sqrt(var var) of the average ranks of a and b."""
    _, _, var_a, var_b, cov = _moments(average_ranks(a), average_ranks(b))
    return cov / jnp.sqrt(var_a * var_b)


def mean_pairwise_ccc(rows) -> float:
    """Mean of ``ccc(rows[i], rows[j])`` over all pairs i < j (NaN for fewer than two rows)."""
    rows = np.asarray(rows)
    pairs = list(itertools.combinations(range(len(rows)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean([float(ccc(rows[i], rows[j])) for i, j in pairs]))


INTERVALS = ("t", "bootstrap")
VERDICTS = ("A > B", "A < B", "inconclusive")


def _check_interval_args(confidence: float, interval: str, num_resamples: int) -> None:
    """Raise ``ConfigError`` naming the first bad argument of :func:`paired_difference`."""
    if interval not in INTERVALS:
        raise ConfigError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if not isinstance(num_resamples, int) or num_resamples < 1:
        raise ConfigError(f"num_resamples must be a positive integer, got {num_resamples!r}")


def finite_differences(a, b) -> tuple[np.ndarray, int]:
    """(d_i = a_i − b_i over the seeds where both are finite, number of seeds dropped). a, b: one value per seed."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ConfigError(f"paired values need one value per seed on both sides, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep] - b[keep], int(a.size - keep.sum())


def _t_test(d: np.ndarray, confidence: float) -> dict:
    """Student t on n ≥ 2 paired differences: d̄ ± t_{(1+c)/2, n−1} s/√n, t = d̄ / (s/√n), two-sided p."""
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return {"lower": None, "upper": None, "t_statistic": None, "p_value": None,
                "note": "zero variance: every paired difference is equal; no interval can be formed (verdict "
                        "inconclusive)"}
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / np.sqrt(n)
    t = mean / (sd / np.sqrt(n))
    return {"lower": mean - half, "upper": mean + half, "t_statistic": t,
            "p_value": float(2 * scipy_stats.t.sf(abs(t), n - 1)), "note": None}


def _bootstrap(d: np.ndarray, confidence: float, seed: int, num_resamples: int) -> tuple[float, float]:
    """Percentile bootstrap of the mean: the (1−c)/2 and (1+c)/2 quantiles (numpy's default linear
    interpolation) of the means of ``num_resamples`` resamples of d with replacement, whose indices are
    ``np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))``."""
    idx = np.random.default_rng(seed).integers(0, d.size, size=(num_resamples, d.size))
    lower, upper = np.quantile(d[idx].mean(axis=1), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lower), float(upper)


def paired_difference(a, b, *, confidence: float = 0.95, interval: str = "t", seed: int = 0,
                      num_resamples: int = 10_000) -> dict:
    """Mean paired difference d̄ = mean_i (a_i − b_i) over seeds i with a two-sided ``confidence`` interval.

    a, b: one value per seed for methods A and B on the SAME seeds (same initial weights, same data order), so
    the seed effect cancels in d_i. A seed where either value is NaN/inf (a failed run) drops the pair.
    ``interval``: ``"t"``: d̄ ± t_{(1+c)/2, n−1} · s/√n, s the sample standard deviation (ddof 1) of the d_i;
    ``"bootstrap"``: the percentile bootstrap of d̄ (:func:`_bootstrap`; ``seed`` and ``num_resamples`` fix it).
    Always reported with it: the paired t statistic d̄/(s/√n) and its two-sided p-value (n − 1 degrees of freedom).

    Returns a JSON-able dict: ``mean_difference``, ``lower``, ``upper``, ``num_pairs`` (n), ``num_dropped``,
    ``std_difference`` (s), ``t_statistic``, ``p_value``, ``confidence``, ``interval`` (+ ``seed``,
    ``num_resamples`` for the bootstrap) and ``note``, a sentence saying why a value is None, else None.
    n = 0: everything None. n = 1: the difference only; no interval, s, t or p (one pair cannot estimate a
    spread). Zero variance (all d_i equal, n ≥ 2): no interval either (t and bootstrap alike; s = 0, t and p
    None): a sample spread of 0 says nothing about the spread of the population (a few seeds that tie exactly,
    e.g. memorized fractions of a small n), so :func:`verdict` calls it inconclusive at any n rather than decisive.
    """
    _check_interval_args(confidence, interval, num_resamples)
    d, dropped = finite_differences(a, b)
    out = {"mean_difference": None, "lower": None, "upper": None, "num_pairs": int(d.size), "num_dropped": dropped,
           "std_difference": None, "t_statistic": None, "p_value": None, "confidence": confidence, "interval": interval}
    if interval == "bootstrap":
        out |= {"seed": seed, "num_resamples": num_resamples}
    if d.size == 0:
        return out | {"note": "no seed with finite values on both sides"}
    out["mean_difference"] = float(d.mean())
    if d.size == 1:
        return out | {"note": "one pair: no interval"}
    out |= {"std_difference": float(d.std(ddof=1))} | _t_test(d, confidence)
    if interval == "bootstrap" and out["lower"] is not None:
        out["lower"], out["upper"] = _bootstrap(d, confidence, seed, num_resamples)
    return out


def verdict(result: dict) -> str:
    """``"A > B"`` if the interval of :func:`paired_difference` lies above 0, ``"A < B"`` if below, else (it holds
    0, or there is no interval: fewer than two pairs, or paired differences all equal) ``"inconclusive"``."""
    if result["lower"] is not None and result["lower"] > 0:
        return "A > B"
    if result["upper"] is not None and result["upper"] < 0:
        return "A < B"
    return "inconclusive"


def seed_values(row: dict, metric: str) -> np.ndarray:
    """The row's ``metric`` per seed (float64), NaN at the seeds its ``failed_seeds`` lists (if it has the key)."""
    if metric not in row:
        raise ConfigError(f"metric {metric!r} is not in the rows of {row['method']!r}; it has {sorted(row)}")
    values = np.array(row[metric], np.float64).ravel()
    values[np.asarray(row.get("failed_seeds", []), int)] = np.nan
    return values


def _rows_by_method(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """{method: {sparsity: row}}; ``ConfigError`` on two rows with the same (method, sparsity)."""
    table: dict[str, dict[float, dict]] = {}
    for row in rows:
        by_sparsity = table.setdefault(row["method"], {})
        if row["sparsity"] in by_sparsity:
            raise ConfigError(f"two rows for method {row['method']!r} at sparsity {row['sparsity']}")
        by_sparsity[row["sparsity"]] = row
    return table


def _matched(table: dict, a: str, b: str, any_sparsity: tuple[str, ...]) -> list[tuple[float, dict, dict]]:
    """(sparsity, row of a, row of b) at every sparsity where both have a row; a method of ``any_sparsity``
    with a single row (the dense net) is matched with every row of the other, at the other's sparsity."""
    for name in (a, b):
        if name not in table:
            raise ConfigError(f"comparison {a!r} vs {b!r}: no rows for method {name!r}; methods: {sorted(table)}")
    rows_a, rows_b = table[a], table[b]
    if a in any_sparsity and len(rows_a) == 1:
        rows_a = dict.fromkeys(rows_b, next(iter(rows_a.values())))
    elif b in any_sparsity and len(rows_b) == 1:
        rows_b = dict.fromkeys(rows_a, next(iter(rows_b.values())))
    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        raise ConfigError(f"comparison {a!r} vs {b!r}: no sparsity in common ({sorted(rows_a)} vs {sorted(rows_b)})")
    return [(s, rows_a[s], rows_b[s]) for s in common]


def comparisons(rows: list[dict], metric: str, pairs, *, confidence: float = 0.95, interval: str = "t",
                seed: int = 0, num_resamples: int = 10_000, any_sparsity: tuple[str, ...] = ("dense",)) -> list[dict]:
    """The ``comparisons`` list of results.json: A − B in ``metric`` for each pair (A, B) of ``pairs`` at each
    sparsity where both have a row, A first then sparsity ascending.

    ``rows``: the experiment's result rows ``{"method", "sparsity", metric: one value per seed, ...}``, all
    over the same seeds; seeds a row lists in ``failed_seeds`` count as NaN (their pair is dropped). Methods in
    ``any_sparsity`` that have one row (``dense``, at sparsity 0) are compared at every sparsity of the other
    method. ``confidence``, ``interval``, ``seed``, ``num_resamples``: as in :func:`paired_difference` (every
    comparison uses the same bootstrap seed). Each entry is
    ``{"metric", "a", "b", "sparsity", **paired_difference(...), "verdict"}``, ``verdict`` from :func:`verdict`.
    """
    table = _rows_by_method(rows)
    out = []
    for a, b in pairs:
        for sparsity, row_a, row_b in _matched(table, a, b, any_sparsity):
            result = paired_difference(seed_values(row_a, metric), seed_values(row_b, metric), confidence=confidence,
                                       interval=interval, seed=seed, num_resamples=num_resamples)
            out.append({"metric": metric, "a": a, "b": b, "sparsity": sparsity, **result, "verdict": verdict(result)})
    return out
