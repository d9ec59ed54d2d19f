"""Experiment ``noise_correlation``: how much of the label noise a sparse network absorbs (No Free Prune §5).

Regression on Gaussian data, y_i = f*(x_i) + z_i with z_i ~ N(0, σ²), σ = ``noise_std``, z kept in memory
(``Dataset.noise``). Every method of ``config.methods`` at each of ``config.sparsities`` (and the dense net, and
every ``config.ablations`` control ``<method>+shuffle``, ``+swap``, ``+rewire`` of memorization; ``swap`` is the
mask found with noise z′, an independent draw with the same inputs and teacher, trained with z) is trained from the
seeds' shared initial weights under the memorization experiment's convergence rule
(:mod:`jaxprune.experiments.memorization`: the dense pre-training, every IMP round and every masked net), and after
every epoch we record, over the n training points,

    ρ(f_θ, z) = corr(f_θ(x_i), z_i)                          (Pearson),
    BS(f_θ, z) = (1/n) Σ_i f_θ(x_i) · z_i / σ²                (Bubeck–Sellke's noise-fitting term),
    C(f_θ, z) = (1/n) Σ_i (f_θ(x_i) − (1/n) Σ_j f_θ(x_j)) z_i  (No Free Prune's Figure 2 quantity),

and their noise-only versions, which subtract the teacher f* (known here) before correlating:

    ρ₀ = corr(f_θ(x_i) − f*(x_i), z_i),    BS₀ = (1/n) Σ_i (f_θ(x_i) − f*(x_i)) · z_i / σ².

f* is independent of z, but on n points it correlates with z by chance: a net that outputs f* exactly (fits none
of the noise) has ρ = corr(f*, z) and BS = (1/n) Σ f* z / σ², not 0 (``teacher_baseline``; on the default data
ρ = 0.055, BS = +0.108), while ρ₀ = BS₀ = 0 for it. A net that outputs f* + z has ρ₀ = 1 and BS₀ = (1/n) Σ z²/σ² ≈ 1.
A constant output fits no noise: every correlation of it is 0 (not NaN). The values at each net's stopping epoch
are reported, with paired differences over seeds (``comparisons``: every method against its shuffle control,
after-training against at-initialization methods), IMP's values across its rounds, Lipschitz estimates and the
Law-of-Robustness scale with σ = noise_std where the fit is below the noise level (:mod:`jaxprune.robustness`).

Masks for regression: SNIP and GraSP differentiate the regression loss itself, mean ½(f(x) − y)²
(:func:`jaxprune.pai.scoring_loss`; GraSP's temperature only applies to classification), on the noisy
targets; IMP and magnitude-after-training train on them. No classification proxy is involved. The stop rule reads
the loss only: regression has no accuracy, so ``accuracy_patience`` must be 0.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import metrics, parallel, plotting, robustness, stats
from jaxprune.config import check_choice
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking, memorization

METRICS = ("correlation", "bubeck_sellke", "paper_correlation", "noise_only_correlation", "noise_only_bubeck_sellke")
COMPARED = ("correlation", "bubeck_sellke", "noise_only_correlation")  # the paired differences over seeds
DATA_PER_SEED = True  # config.data_per_seed: every seed draws its own teacher, inputs and noise


def noise_correlation(outputs: jax.Array, noise: jax.Array) -> jax.Array:
    """Pearson correlation cov(f, z) / (std f · std z) of outputs f_i = f_θ(x_i) and noise z_i; 0 when f (or z)
    is constant (a constant output fits no noise)."""
    f, z = outputs - outputs.mean(), noise - noise.mean()
    scale = jnp.sqrt(jnp.sum(f**2) * jnp.sum(z**2))
    return jnp.where(scale > 0, jnp.sum(f * z) / jnp.where(scale > 0, scale, 1.0), 0.0)


def bubeck_sellke(outputs: jax.Array, noise: jax.Array, sigma: float) -> jax.Array:
    """(1/n) Σ_i f_i · z_i / σ², the correlation term of Bubeck & Sellke's law of robustness."""
    return jnp.mean(outputs * noise) / sigma**2


def paper_correlation(outputs: jax.Array, noise: jax.Array) -> jax.Array:
    """(1/n) Σ_i (f_i − mean_j f_j) z_i, No Free Prune's Figure 2 quantity (0 for a constant f)."""
    return jnp.mean((outputs - outputs.mean()) * noise)


def correlations(outputs: jax.Array, clean: jax.Array, noise: jax.Array, sigma: float) -> dict:
    """Every quantity of :data:`METRICS` for outputs f_i, teacher values f*_i and noise z_i (module docstring)."""
    residual = outputs - clean
    return {"correlation": noise_correlation(outputs, noise), "bubeck_sellke": bubeck_sellke(outputs, noise, sigma),
            "paper_correlation": paper_correlation(outputs, noise),
            "noise_only_correlation": noise_correlation(residual, noise),
            "noise_only_bubeck_sellke": bubeck_sellke(residual, noise, sigma)}


def validate(config) -> None:
    """Memorization's keys (methods, sparsities, ablations, stop rule) on Gaussian regression data."""
    check_choice(config, "dataset", ("gaussian",))
    check_choice(config, "task", ("regression",))
    if config.accuracy_patience != 0:
        raise ConfigError(f"config.accuracy_patience={config.accuracy_patience!r}: must be 0 (regression has no "
                          "accuracy; the stop rule reads the loss)")
    memorization.validate_training(config)


def run(config, workdir: str) -> dict:
    """The ``noise_correlation`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("noise_correlation")
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    sigma, (n, d) = float(config.noise_std), common.data_size(setup)
    rule = memorization.StopRule.from_config(config)
    log(f"{config.num_seeds} seeds, methods {', '.join(config.methods)} at sparsities {tuple(config.sparsities)}, "
        f"ablations {tuple(config.ablations)}, {config.model} on {n} gaussian regression points, noise_std {sigma}, "
        f"{'own dataset per seed' if config.data_per_seed else 'one dataset'}")

    baseline = teacher_baseline(setup, seeds, sigma)
    log(f"a net that outputs the teacher f* (fits no noise): corr(f, z) {baseline['correlation']:.4f}, "
        f"(1/n) Σ f z / σ² {baseline['bubeck_sellke']:+.4f}; the noise-only columns are 0 for it")

    def probe(apply_fn, params, seed_data):
        x, y, z = training_arrays(setup, seed_data)
        return correlations(apply_fn(params, x)[:, 0], y - z, z, sigma)

    cells, rounds, _, rewiring = memorization.train_cells(config, setup, seeds, rule, log, probe)
    results = []
    for method, sparsity, stacked, fit in cells:
        report = masking.mask_report(setup, seeds, stacked, rewiring.get((method, sparsity)))
        results.append(result_row(method, sparsity, fit, report, sigma, n, d))
        capped = f", {int(fit['hit_cap'].sum())} capped" if fit["hit_cap"].any() else ""
        log(f"{method:>28} sparsity {sparsity:.3f}: corr(f, z) {common.mean_std(results[-1]['correlation'])}, "
            f"BS {common.mean_std(results[-1]['bubeck_sellke'])}, epochs {common.range_median(fit['epochs'])}{capped}")
    imp_rounds = [{"density": density, "epochs": fit["epochs"], "hit_cap": fit["hit_cap"],
                   **{k: final(fit, k) for k in METRICS}} for density, (_, fit) in rounds.items()]
    pairs = memorization.comparison_pairs(results)
    comparisons = [c for metric in COMPARED for c in stats.comparisons(results, metric, pairs)]
    summary = {"experiment": "noise_correlation", "num_seeds": config.num_seeds, "sparsities": list(config.sparsities),
               "noise_std": sigma,
               "teacher_baseline": baseline, "num_examples": n, "input_dim": d, "ablations": list(config.ablations),
               "stop_rule": rule._asdict() | {"max_epochs": config.max_epochs},
               "num_capped": int(sum(r["hit_cap"].sum() for r in results)),
               "num_failed": int(sum(len(r["failed_seeds"]) for r in results)),
               "num_networks": len(results) * config.num_seeds, "results": results, "imp_rounds": imp_rounds,
               "comparisons": comparisons}
    if parallel.is_primary():
        write_outputs(workdir, config, cells, results, imp_rounds, comparisons)
    log(f"{summary['num_capped']} of {summary['num_networks']} networks hit max_epochs, {summary['num_failed']} failed "
        f"(non-finite loss); outputs in {workdir}")
    return summary


def training_arrays(setup: common.Setup, seed_data) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, y, z) of the training set: the seed's own (``seed_data``) or the shared one; f* = y − z."""
    if seed_data is None:
        return setup.train_data.x, setup.train_data.y, jnp.asarray(setup.dataset.noise)
    return seed_data.x_train, seed_data.y_train, seed_data.noise


def teacher_baseline(setup: common.Setup, seeds: common.Seeds, sigma: float) -> dict:
    """What a net that outputs the teacher f* = y − z exactly scores on each quantity (mean over the seeds' own
    datasets with ``data_per_seed``): not 0 for corr(f, z) and BS, since f* correlates with z by chance on n points."""
    if seeds.data is None:
        _, y, z = training_arrays(setup, None)
        return {k: float(v) for k, v in correlations(y - z, y - z, z, sigma).items()}
    y, z = parallel.to_host((seeds.data.y_train, seeds.data.noise))
    values = jax.vmap(lambda a, b: correlations(a - b, a - b, b, sigma))(jnp.asarray(y), jnp.asarray(z))
    return {k: float(np.mean(v)) for k, v in values.items()}


def final(fit: dict, metric: str) -> np.ndarray:
    """Each seed's probe ``metric`` after its last epoch (its stopping epoch)."""
    return fit["history"][f"probe/{metric}"][np.arange(len(fit["epochs"])), fit["epochs"] - 1]


def result_row(method: str, sparsity: float, fit: dict, report: dict, sigma: float, n: int, d: int) -> dict:
    """One results.json row: per-seed correlation and Bubeck–Sellke term at the stopping epoch, stopping, failures
    (:func:`jaxprune.experiments.memorization.with_failures`: failed seeds NaN), mask densities, robustness."""
    row = {"method": method, "sparsity": float(sparsity), **{k: final(fit, k) for k in METRICS},
           "train_loss": fit["train_loss"], "epochs": fit["epochs"], "hit_cap": fit["hit_cap"], **report}
    return (memorization.with_failures(row, fit, (*METRICS, "train_loss"))
            | robustness.summary(fit["nonzero"], fit["lipschitz_input_gradient"], fit.get("lipschitz_spectral_bound"),
                                 sigma=sigma, num_examples=n, input_dim=d, fit_sq_error=fit["fit_sq_error"]))


def write_outputs(workdir: str, config, cells: list, results: list[dict], imp_rounds: list[dict],
                  comparisons: list[dict]) -> None:
    """metrics.jsonl (per method, sparsity, seed, epoch run) and the figures: ρ and BS against density per method
    (capped nets marked x), ρ across IMP rounds, the paired differences."""
    with metrics.fresh(workdir, config.num_seeds) as writer:  # one compiled call trains them all: no earlier lines
        writer.append([{"method": m, "sparsity": s, "seed": i, "epoch": e + 1,
                        "train_loss": fit["history"]["loss"][i, e], **{k: fit["history"][f"probe/{k}"][i, e]
                                                                       for k in METRICS}}
                       for m, s, _, fit in cells for i in range(config.num_seeds) for e in range(fit["epochs"][i])])
        writer.rows(results, METRICS)
    by_method = memorization.rows_by_method(results)
    capped = {m: np.stack([r["hit_cap"] for r in rows], axis=1) for m, rows in by_method.items()}
    for metric, label in (("correlation", "corr(f(x_i), z_i)"), ("bubeck_sellke", "(1/n) Σ f(x_i) z_i / σ²"),
                          ("noise_only_correlation", "corr(f(x_i) − f*(x_i), z_i)"),
                          ("noise_only_bubeck_sellke", "(1/n) Σ (f − f*)(x_i) z_i / σ²")):
        plotting.lines_vs_density(
            os.path.join(workdir, f"{metric}_vs_density.png"),
            {m: ([1.0 - r["sparsity"] for r in rows], np.stack([r[metric] for r in rows], axis=1))
             for m, rows in by_method.items()}, flagged=capped, ylabel=f"{label} at convergence",
            title=f"Noise fitted, σ = {config.noise_std} (± sd; x: hit max_epochs)")
    if imp_rounds:
        plotting.lines_vs_density(
            os.path.join(workdir, "imp_correlation_vs_density.png"),
            {"IMP rounds": ([r["density"] for r in imp_rounds],
                            np.stack([r["correlation"] for r in imp_rounds], axis=1))},
            ylabel="corr(f(x_i), z_i) at convergence", title="Noise fitted across IMP rounds")
    if comparisons:
        plotting.paired_differences(os.path.join(workdir, "paired_differences.png"), comparisons,
                                    title="Noise fitted: paired differences over seeds (95% t interval)")
