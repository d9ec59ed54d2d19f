"""Experiment ``noise_correlation_curve``: No Free Prune's Figures 2a, 3, 2b and 2c, epoch by epoch.

Student–teacher regression y = f*(x) + z (z kept, σ = ``noise_std``). Every network trains ``epochs`` epochs a
round for ``rounds`` rounds of IMP: after each round the lowest-|θ| ``prune_fraction`` of the surviving prunable
weights is pruned (global scope) and the survivors rewind to θ₀ (``rounds`` = 1: no pruning, Figs 2b/2c). After
every epoch, over the n training points (:func:`jaxprune.experiments.noise_correlation.correlations`):

    C = (1/n) Σ_i (f(x_i) − (1/n) Σ_j f(x_j)) z_i      (the paper's quantity),
    ρ₀ = corr(f − f*, z),   BS₀ = (1/n) Σ_i (f(x_i) − f*(x_i)) z_i / σ²   (the noise-only part).

A sweep (``sweep`` = ``learning_rate`` or ``gradient_noise_std``, values ``sweep_values``) is one more vmapped
axis: the networks are (sweep value, seed) pairs, all trained by one program (:func:`jaxprune.parallel.seed_map`),
the learning rate or the gradient noise std a traced per-network input. Gradient noise: i.i.d. N(0, std²) on every
gradient entry before the optimizer, its own key stream (:mod:`jaxprune.train`).

Outputs (results.json): ``curve`` (the paper's quantity: one ``{epoch, round, density, mean, se}`` per epoch, mean
and standard error over seeds, of the first sweep value), ``noise_only_correlation`` and
``noise_only_bubeck_sellke`` in the same form, ``peaks`` (each round's last-epoch value: round-end peaks against
density), ``climb`` (per round: last epoch − first epoch, paired over seeds, mean with a 95% t interval) and
``drop`` (per prune: the next round's first epoch − this round's last), both for the paper's quantity of the
first sweep value, and with a sweep ``curves`` = {value: [mean per epoch]} (and ``curves_se``).
``curves.npz``: every network's values, [sweep values, seeds, rounds, epochs] per quantity.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import irp, masks, parallel, plotting, stats, train
from jaxprune import workdir as wd
from jaxprune.config import check_choice, check_fraction, check_positive_int
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, noise_correlation

SWEEPS = ("", "learning_rate", "gradient_noise_std")
DATA_PER_SEED = True  # config.data_per_seed: every seed draws its own teacher, inputs and noise (the paper's k seeds)
RECORDED = ("paper_correlation", "noise_only_correlation", "noise_only_bubeck_sellke")


def validate(config) -> None:
    """Gaussian regression; rounds, prune_fraction, the sweep and the gradient noise."""
    check_choice(config, "dataset", ("gaussian",))
    check_choice(config, "task", ("regression",))
    check_positive_int(config, "rounds")
    check_fraction(config, "prune_fraction")
    check_choice(config, "sweep", SWEEPS)
    if not (isinstance(config.gradient_noise_std, (int, float)) and config.gradient_noise_std >= 0):
        raise ConfigError(f"config.gradient_noise_std={config.gradient_noise_std!r}: must be >= 0")
    values = config.sweep_values
    if config.sweep and not (isinstance(values, (list, tuple)) and len(values) > 0
                             and all(isinstance(v, (int, float)) for v in values)):
        raise ConfigError(f"config.sweep_values={values!r}: sweep={config.sweep!r} needs a non-empty tuple of numbers")
    if config.sweep == "learning_rate" and min(values) <= 0:
        raise ConfigError(f"config.sweep_values={tuple(values)!r}: learning rates must be > 0")
    if config.sweep == "gradient_noise_std" and min(values) < 0:
        raise ConfigError(f"config.sweep_values={tuple(values)!r}: gradient noise stds must be >= 0")
    if not config.sweep and values:
        raise ConfigError(f"config.sweep_values={tuple(values)!r} given without config.sweep; set --config.sweep="
                          "learning_rate or gradient_noise_std")


def sweep_points(config) -> list[tuple[float, float]]:
    """(learning rate, gradient noise std) of every sweep value (one point without a sweep)."""
    if config.sweep == "learning_rate":
        return [(float(v), float(config.gradient_noise_std)) for v in config.sweep_values]
    if config.sweep == "gradient_noise_std":
        return [(float(config.learning_rate), float(v)) for v in config.sweep_values]
    return [(float(config.learning_rate), float(config.gradient_noise_std))]


def network_curve(params0, order_key, learning_rate, noise_std, x, y, noise, *, model, config) -> dict:
    """ONE network's IMP run on training data (x, y = f*(x) + noise): per round and epoch the :data:`RECORDED`
    quantities and the training loss [rounds, epochs], and each round's density [rounds]. ``learning_rate`` and
    ``noise_std`` may be traced."""
    data, clean = train.Data(x, y), y - noise
    per_epoch = train.steps_per_epoch(data.x.shape[0], config.batch_size)
    tx = train.make_optimizer(config.optimizer, learning_rate, total_steps=config.epochs * per_epoch,
                              momentum=config.momentum, weight_decay=config.weight_decay)
    apply_fn = train.apply_fn_for(model, {})

    def one_round(mask, r):
        key = jax.random.fold_in(order_key, r)

        def one_epoch(state, e):
            state, metrics, _ = train.train_steps(state, mask, data, key, e * per_epoch, model=model, tx=tx,
                                                  num_steps=per_epoch, batch_size=config.batch_size,
                                                  gradient_noise_std=noise_std)
            quantities = noise_correlation.correlations(apply_fn(state.params, data.x)[:, 0], clean, noise,
                                                        config.noise_std)
            return state, {k: quantities[k] for k in RECORDED} | {"train_loss": metrics["loss"].mean()}

        state = train.init_state(masks.apply(params0, mask), {}, tx)
        state, epochs = jax.lax.scan(one_epoch, state, jnp.arange(config.epochs))
        pruned = irp.magnitude_prune(state.params, mask, irp.density_after(r + 1, config.prune_fraction))
        return pruned, epochs | {"density": masks.density(mask, params0)}

    return jax.lax.scan(one_round, masks.ones(params0), jnp.arange(config.rounds))[1]


def train_networks(config, setup: common.Setup, seeds: common.Seeds, points) -> dict:
    """Every (sweep value, seed) network's curves, [values, seeds, rounds, (epochs)] on the host."""
    tile = lambda a: jnp.concatenate([a] * len(points))  # noqa: E731  network v · S + s: seed s at value v
    per_value = lambda column: jnp.repeat(jnp.asarray([p[column] for p in points], jnp.float32),  # noqa: E731
                                          config.num_seeds)
    if seeds.data is None:  # one dataset shared by every network
        arrays = parallel.replicate((setup.train_data.x, setup.train_data.y, jnp.asarray(setup.dataset.noise)),
                                    setup.mesh)
    else:  # network v · S + s trains on seed s's own dataset
        arrays = setup.shard(jax.tree.map(tile, (seeds.data.x_train, seeds.data.y_train, seeds.data.noise)))
    data_axis = None if seeds.data is None else 0
    fn = parallel.seed_map(lambda *args: network_curve(*args, model=setup.model, config=config), setup.mesh,
                           in_axes=(0, 0, 0, 0, data_axis, data_axis, data_axis))
    out = fn(*setup.shard((jax.tree.map(tile, seeds.params), tile(seeds.order_keys), per_value(0), per_value(1))),
             *arrays)
    return jax.tree.map(lambda a: a.reshape(len(points), config.num_seeds, *a.shape[1:]), parallel.to_host(out))


def mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std / sqrt(S), ddof 1) over the seed axis 0."""
    values = np.asarray(values, np.float64)
    se = values.std(0, ddof=1) / np.sqrt(values.shape[0]) if values.shape[0] > 1 else np.zeros(values.shape[1:])
    return values.mean(0), se


def curve_rows(values: np.ndarray, densities: np.ndarray) -> list[dict]:
    """``{epoch, round, density, mean, se}`` per epoch from per-seed values [seeds, rounds, epochs]."""
    mean, se = mean_se(values)
    rounds, epochs = mean.shape
    return [{"epoch": r * epochs + e + 1, "round": r, "density": float(densities[r]), "mean": float(mean[r, e]),
             "se": float(se[r, e])} for r in range(rounds) for e in range(epochs)]


def run(config, workdir: str) -> dict:
    """The experiment end to end: train every network, summarize, write the figures."""
    log = common.Progress("noise_correlation_curve")
    setup = common.setup(config)
    seeds = common.init_seeds(setup)
    points = sweep_points(config)
    log(f"{config.num_seeds} seeds x {len(points)} sweep point(s) ({config.sweep or 'no sweep'}), {config.rounds} "
        f"round(s) x {config.epochs} epochs, {config.model} {tuple(config.widths)}, {common.data_size(setup)[0]} "
        f"points, {'own dataset per seed' if config.data_per_seed else 'one dataset'}")
    out = train_networks(config, setup, seeds, points)
    results = summarize(config, points, out)
    for p in results["peaks"]:
        log(f"round {p['round']} (density {p['density']:.3f}): round-end (1/n) Σ (f − f̄) z "
            f"{p['paper_correlation']['mean']:.4f} ± {p['paper_correlation']['se']:.4f}, corr(f − f*, z) "
            f"{p['noise_only_correlation']['mean']:.4f}")
    if parallel.is_primary():
        wd.save_npz(os.path.join(workdir, "curves.npz"), {k: np.asarray(v) for k, v in out.items()})
        write_figures(workdir, config, results)
    return results


def summarize(config, points, out: dict) -> dict:
    """results.json from every network's curves ``out`` [values, seeds, rounds, epochs] (module docstring)."""
    densities = out["density"][0, 0]
    results = {"experiment": "noise_correlation_curve", "num_seeds": config.num_seeds, "rounds": config.rounds,
               "epochs_per_round": config.epochs, "noise_std": config.noise_std, "densities": densities.tolist(),
               "sweep": config.sweep,
               "sweep_points": [{"learning_rate": lr, "gradient_noise_std": s} for lr, s in points],
               "curve": curve_rows(out["paper_correlation"][0], densities),
               **{k: curve_rows(out[k][0], densities) for k in RECORDED[1:]},
               "peaks": [{"round": r, "density": float(densities[r]),
                          **{k: dict(zip(("mean", "se"), map(float, mean_se(out[k][0, :, r, -1])))) for k in RECORDED},
                          "paper_correlation_per_seed": out["paper_correlation"][0, :, r, -1].tolist()}
                         for r in range(config.rounds)],
               "final_train_loss": dict(zip(("mean", "se"), map(float, mean_se(out["train_loss"][0, :, -1, -1])))),
               **climbs_and_drops(out["paper_correlation"][0])}
    if config.sweep:
        per_epoch = [mean_se(out["paper_correlation"][i].reshape(config.num_seeds, -1)) for i in range(len(points))]
        results["curves"] = {str(v): m.tolist() for v, (m, _) in zip(config.sweep_values, per_epoch)}
        results["curves_se"] = {str(v): se.tolist() for v, (_, se) in zip(config.sweep_values, per_epoch)}
    return results


def climbs_and_drops(values: np.ndarray) -> dict:
    """Paired over seeds (values [seeds, rounds, epochs]): each round's climb (last − first epoch) and each
    prune's drop (next round's first epoch − this round's last), :func:`jaxprune.stats.paired_difference`."""
    rounds = values.shape[1]
    return {"climb": [{"round": r} | stats.paired_difference(values[:, r, -1], values[:, r, 0]) for r in range(rounds)],
            "drop": [{"after_round": r} | stats.paired_difference(values[:, r + 1, 0], values[:, r, -1])
                     for r in range(rounds - 1)]}


def write_figures(workdir: str, config, results: dict) -> None:
    """``correlation_vs_epoch.png`` (Fig 2a/3: the curve with prunes marked, and the round-end peaks against
    density) or, with a sweep, ``correlation_vs_epoch_by_<sweep>.png`` (Fig 2b/2c)."""
    fig, axes = plotting.figure(1 if config.sweep else 2, width=5.0, height=3.8)
    ax = axes[0][0]
    if config.sweep:
        for value, mean in results["curves"].items():
            mean, se = np.asarray(mean), np.asarray(results["curves_se"][value])
            epochs = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(epochs, mean, label=f"{config.sweep} = {value}")
            ax.fill_between(epochs, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
        name = f"correlation_vs_epoch_by_{config.sweep}.png"
    else:
        for key, label in (("curve", "(1/n) Σ (f − f̄) z  (paper)"), ("noise_only_correlation", "corr(f − f*, z)")):
            rows = results[key]
            epoch, mean, se = (np.asarray([r[k] for r in rows]) for k in ("epoch", "mean", "se"))
            (line,) = ax.plot(epoch, mean, label=label)
            ax.fill_between(epoch, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
        for r in range(1, config.rounds):
            ax.axvline(r * config.epochs + 0.5, color="gray", linewidth=0.5, linestyle=":")
        peaks = results["peaks"]
        axes[0][1].errorbar([p["density"] for p in peaks], [p["paper_correlation"]["mean"] for p in peaks],
                            yerr=[p["paper_correlation"]["se"] for p in peaks], marker="o", capsize=3)
        axes[0][1].set(xscale="log", xlabel="density (remaining weights)", ylabel="round-end (1/n) Σ (f − f̄) z",
                       title="Round-end peaks (± s.e.)")
        axes[0][1].invert_xaxis()
        axes[0][1].grid(alpha=0.3, which="both")
        name = "correlation_vs_epoch.png"
    ax.set(xlabel="epoch", ylabel="correlation with the label noise",
           title=plotting.wrap(f"{config.num_seeds} seeds, mean ± s.e."
                               + ("; dotted: prune + rewind" if not config.sweep else ""), 45))
    ax.grid(alpha=0.3)
    plotting.legend_outside(fig, axes[0][:1])
    plotting.save(fig, os.path.join(workdir, name))
