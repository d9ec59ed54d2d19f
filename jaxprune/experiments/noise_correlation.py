"""Experiment ``noise_correlation``: how much of the label noise a sparse network absorbs (No Free Prune §5).

Regression on Gaussian data, y_i = f*(x_i) + z_i with z_i ~ N(0, noise_std²) kept in memory (``Dataset.noise``).
For every method at ``config.sparsity`` (and the dense net) all seeds' masked networks are trained in one jitted,
vmapped call for ``config.epochs`` epochs, and after every epoch we record

    ρ(f_θ, z) = corr(f_θ(x_i), z_i)  (Pearson, over the training set).

f* is independent of z, so ρ > 0 measures the part of the noise the network has fitted (memorized). For IMP the
same is recorded across its rounds: the mask of every round (density (1 − f)^r down to 1 − sparsity) is trained
from the rewound initialization like the others, and its final ρ reported. Lipschitz estimates and the
Law-of-Robustness scale with σ = noise_std are reported per method (:mod:`jaxprune.robustness`).

Masks for regression: SNIP and GraSP differentiate the regression loss itself, mean ½(f(x) − y)²
(:func:`jaxprune.pai.scoring_loss`; GraSP's temperature only applies to classification), on the noisy
targets; IMP and magnitude-after-training train on them. No classification proxy is involved.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxprune import irp, masks, parallel, plotting, robustness, train
from jaxprune import workdir as wd
from jaxprune.config import check_choice, check_fraction, check_methods, validate_pruning
from jaxprune.experiments import common, masking, memorization
from jaxprune.experiments import irp as irp_experiment


def noise_correlation(outputs: jax.Array, noise: jax.Array) -> jax.Array:
    """Pearson correlation cov(f, z) / (std f · std z) of outputs f_i = f_θ(x_i) and noise z_i."""
    return jnp.corrcoef(outputs, noise)[0, 1]


def validate(config) -> None:
    """Noise-correlation keys: Gaussian regression data, methods, one sparsity in [0, 1)."""
    check_methods(config, masking.methods())
    check_fraction(config, "sparsity")
    check_choice(config, "dataset", ("gaussian",))
    check_choice(config, "task", ("regression",))
    validate_pruning(config)


def method_grid(config, setup: common.Setup, seeds: common.Seeds, log,
                checkpoint_dir: str | None = None) -> tuple[list, list]:
    """(cells, masks): ('dense', 1.0), (method, density) for each method, IMP once per round (its last round is
    the ``imp`` method, its rounds checkpointed under ``checkpoint_dir``); masks are the matching stacked
    [seeds, ...] pytrees."""
    cells, grid = [("dense", 1.0)], [jax.vmap(masks.ones)(seeds.params)]
    for method in config.methods:
        if method == "imp":
            densities = irp.schedule(config.prune_fraction, targets=[1.0 - config.sparsity])
            _, _, out = irp_experiment.run_rounds(config, setup, densities, log, record=set(densities),
                                                  checkpoint_dir=checkpoint_dir)
            cells += [("imp", d) for d in densities]
            grid += [out["masks"][d] for d in densities]
        else:
            cells.append((method, 1.0 - config.sparsity))
            grid.append(masking.method_masks(method, config, setup, seeds, [config.sparsity], log)[config.sparsity])
        log(f"masks: {method}")
    return cells, grid


def run(config, workdir: str) -> dict:
    """The ``noise_correlation`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("noise_correlation")
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    z = jnp.asarray(setup.dataset.noise)
    n, d = setup.train_data.x.shape[0], int(np.prod(setup.train_data.x.shape[1:]))
    log(f"{config.num_seeds} seeds, methods {', '.join(config.methods)} at sparsity {config.sparsity}, "
        f"{config.model} on {n} gaussian regression points, noise_std {config.noise_std}")
    cells, grid = method_grid(config, setup, seeds, log, os.path.join(workdir, wd.CHECKPOINTS, "imp"))
    probe = lambda apply_fn, params: noise_correlation(apply_fn(params, setup.train_data.x)[:, 0], z)  # noqa: E731
    nets, net_masks = common.networks(setup, seeds, grid)
    at_init = parallel.seed_map(lambda p, bs, m: probe(train.apply_fn_for(setup.model, bs), masks.apply(p, m)),
                                setup.mesh)(nets.params, nets.batch_stats, net_masks)
    at_init = np.asarray(parallel.to_host(at_init)).reshape(len(grid), -1)
    out = memorization.train_all(config, setup, seeds, grid, max_epochs=config.epochs, rule=None, probe=probe)
    curves = np.concatenate([at_init[..., None], out["history"]["probe"]], axis=-1)
    final = {m: c for c, (m, _) in enumerate(cells)}  # IMP: its last (sparsest) round
    results = []
    for method, c in final.items():
        bound = out.get("lipschitz_spectral_bound")
        results.append({"method": method, "sparsity": 0.0 if method == "dense" else config.sparsity,
                        "correlation": curves[c], "final_correlation": curves[c][:, -1],
                        "train_loss": out["train_loss"][c]}
                       | robustness.summary(out["nonzero"][c], out["lipschitz_input_gradient"][c],
                                            None if bound is None else bound[c], sigma=config.noise_std,
                                            num_examples=n, input_dim=d))
        log(f"{method:>15}: corr(f, z) after {config.epochs} epochs {common.mean_std(curves[c][:, -1])}")
    imp_rounds = [{"density": dens, "final_correlation": curves[c][:, -1]}
                  for c, (m, dens) in enumerate(cells) if m == "imp"]
    if parallel.is_primary():
        write_outputs(workdir, config, results, imp_rounds)
    return {"experiment": "noise_correlation", "num_seeds": config.num_seeds, "sparsity": config.sparsity,
            "noise_std": config.noise_std, "num_examples": n, "input_dim": d, "epochs": config.epochs,
            "results": results, "imp_rounds": imp_rounds}


def write_outputs(workdir: str, config, results: list[dict], imp_rounds: list[dict]) -> None:
    """metrics.jsonl (per method, seed, epoch) and the figures: ρ vs epoch per method, ρ across IMP rounds."""
    wd.write_jsonl(os.path.join(workdir, wd.METRICS), [
        {"method": r["method"], "seed": i, "epoch": e, "noise_correlation": r["correlation"][i, e]}
        for r in results for i in range(config.num_seeds) for e in range(config.epochs + 1)])
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        plotting.band(ax, np.arange(config.epochs + 1), r["correlation"], r["method"])
    ax.set(xlabel="epoch", ylabel="corr(f(x_i), z_i)",
           title=f"Noise fitted at sparsity {config.sparsity} (± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plotting.save(fig, os.path.join(workdir, "correlation_vs_epoch.png"))
    if imp_rounds:
        plotting.lines_vs_density(
            os.path.join(workdir, "imp_correlation_vs_density.png"),
            {"IMP rounds": ([r["density"] for r in imp_rounds],
                            np.stack([r["final_correlation"] for r in imp_rounds], axis=1))},
            ylabel="corr(f(x_i), z_i) after training", title="Noise fitted across IMP rounds")
