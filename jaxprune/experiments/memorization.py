"""Experiment ``memorization``: how many randomly labelled points a sparse network can fit (No Free Prune §5).

For each method in ``config.methods`` and each sparsity in ``config.sparsities`` the masks of all seeds come from
one vmapped call (:func:`jaxprune.experiments.masking.method_masks`), computed on the randomly labelled training
set itself (SNIP/GraSP score on it, IMP and magnitude-after-training train on it). Every masked network (all
methods × sparsities × seeds, plus the dense network as a reference) is then trained in ONE jitted, doubly vmapped
call until it converges, and its memorized fraction — the accuracy on its own training set in inference mode — is
reported with its empirical Lipschitz constants and the Law-of-Robustness scale (:mod:`jaxprune.robustness`).

Random labels: ``gaussian`` data with ``labels='random'`` (y ~ Uniform{0..K−1} independent of x, drawn from
``data_seed``); any other dataset has every training label re-drawn uniformly (label noise of fraction 1, key of
``data_seed``). Either way the labels are fixed by ``data_seed`` and shared by all model seeds.

Convergence rule (No Free Prune: "until the loss changes by < 0.01 or the accuracy is flat for 3 epochs"), with
L_e, A_e the mean training loss and accuracy of epoch e = 1, 2, …: stop after epoch e ≥ ``min_epochs`` if

  e > w and |L_e − L_{e−w}| < loss_tol,  or  e > p and max_{e−p < k ≤ e} |A_k − A_{e−p}| ≤ accuracy_tol,

w = ``loss_window``, p = ``accuracy_patience``, or at ``max_epochs``. The paper's rule is w = 1, min_epochs = 0.
Taken literally it stops sparse nets at epoch 2 at chance accuracy: with Adam at lr 1e-3 on random labels a sparse
net's loss first moves by ~0.001 per epoch for tens of epochs before memorization sets in (measured, see the
README), so the defaults in ``configs/memorization.py`` measure the change over w = 10 epochs after a minimum.

Every network is frozen (state and history) from the epoch its rule fires, so it stops at its own epoch without a
host sync; the networks train in small blocks (:func:`jaxprune.parallel.seed_map`), each block in a
``while_loop`` that ends when all of its networks have stopped.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, masks, parallel, plotting, robustness, train
from jaxprune import workdir as wd
from jaxprune.config import check_choice, check_methods, check_positive_int, check_sparsities, validate_pruning
from jaxprune.data.noise import with_label_noise
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking

MLP_MODELS = ("mlp", "lenet300_100")  # models the spectral-norm-product bound applies to
AT_INIT = ("snip", "grasp", "synflow", "random")  # the paper's at-initialization methods (ordering check)


class StopRule(NamedTuple):
    """The convergence rule of the module docstring."""

    loss_tol: float
    loss_window: int
    accuracy_patience: int
    accuracy_tol: float
    min_epochs: int = 0

    @classmethod
    def from_config(cls, config) -> StopRule:
        return cls(config.loss_tol, config.loss_window, config.accuracy_patience, config.accuracy_tol,
                   config.min_epochs)


def should_stop(rule: StopRule, losses: jax.Array, accuracies: jax.Array, epochs_done: jax.Array) -> jax.Array:
    """Whether to stop after ``epochs_done`` = e epochs (module docstring).

    ``losses``/``accuracies`` [max_epochs] hold L_k, A_k at index k − 1."""
    e, w, p = epochs_done, rule.loss_window, rule.accuracy_patience
    loss_flat = (e > w) & (jnp.abs(losses[e - 1] - losses[jnp.maximum(e - 1 - w, 0)]) < rule.loss_tol)
    window = accuracies[jnp.clip(e - 1 - p + jnp.arange(p + 1), 0)]  # A_{e−p}, …, A_e
    accuracy_flat = (e > p) & (jnp.max(jnp.abs(window - window[0])) <= rule.accuracy_tol)
    return (e >= rule.min_epochs) & (loss_flat | accuracy_flat)


def train_until_converged(
    states: train.TrainState, masks_, data_: train.Data, keys: jax.Array, *, model, tx, batch_size: int,
    max_epochs: int, rule: StopRule | None, probe: Callable | None = None,
) -> tuple[train.TrainState, dict, jax.Array]:
    """A BLOCK of masked networks (a leading axis on ``states``, ``masks_``, ``keys``) trained epoch by epoch, epoch e
    of network i with data order ``fold_in(keys[i], e)``, each frozen (state and history) from the epoch its
    ``rule`` fires (never if None); the loop ends when every network has stopped, or at ``max_epochs``.

    A frozen network's state is exactly that of a lone run of its epoch count, whatever the others do. Returns the
    final states, per-epoch ``loss``/``accuracy`` (and ``probe(state)`` after each epoch) as [block, max_epochs]
    arrays, NaN after each network's stopping epoch, and the number of epochs each ran. The epoch index is shared
    by the block, so every step's data-order switch stays a branch (not a per-network select).
    """
    per_epoch = train.steps_per_epoch(data_.x.shape[0], batch_size)
    size = keys.shape[0]
    nan = jnp.full((size, max_epochs), jnp.nan, jnp.float32)
    history = {"loss": nan, "accuracy": nan} | ({"probe": nan} if probe else {})

    def one_epoch(state, mask, key, e):
        trained, metrics, _ = train.train_steps(state, mask, data_, key, e * per_epoch, model=model, tx=tx,
                                                num_steps=per_epoch, batch_size=batch_size)
        return trained, jax.tree.map(jnp.mean, metrics) | ({"probe": probe(trained)} if probe else {})

    def keep(done, new, old):
        return jax.tree.map(lambda n, o: jnp.where(done.reshape(-1, *[1] * (n.ndim - 1)), o, n), new, old)

    def running(carry):
        e, *_, done = carry
        return (e < max_epochs) & ~jnp.all(done)

    def epoch(carry):
        e, states, history, epochs, done = carry
        trained, metrics = jax.vmap(one_epoch, in_axes=(0, 0, 0, None))(states, masks_, keys, e)
        recorded = {k: v.at[:, e].set(metrics[k]) for k, v in history.items()}
        stop = (jax.vmap(functools.partial(should_stop, rule), in_axes=(0, 0, None))(
            recorded["loss"], recorded["accuracy"], e + 1) if rule else jnp.zeros(size, bool))
        return (e + 1, keep(done, trained, states), keep(done, recorded, history), jnp.where(done, epochs, e + 1),
                done | stop)

    start = (jnp.int32(0), states, history, jnp.zeros(size, jnp.int32), jnp.zeros(size, bool))
    _, states, history, epochs, _ = jax.lax.while_loop(running, epoch, start)
    return states, history, epochs


def train_all(config, setup: common.Setup, seeds: common.Seeds, mask_sets: list, *, max_epochs: int,
              rule: StopRule | None, probe: Callable | None = None) -> dict:
    """Train every seed's network under each of the C stacked mask sets from its initial weights: the C · seeds
    networks (:func:`jaxprune.experiments.common.networks`) are the units of one
    :func:`jaxprune.parallel.seed_map` call, trained in blocks until they converge (:func:`train_until_converged`).
    Returns host arrays [C, seeds, ...]: ``train_accuracy``/``train_loss`` (whole training set, inference mode),
    ``epochs``, ``history`` (per-epoch), ``nonzero`` (‖m‖₀), ``lipschitz_input_gradient`` and, for MLPs,
    ``lipschitz_spectral_bound``."""
    tx = train.optimizer_from_config(config, train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size))
    cells = len(mask_sets)
    nets, net_masks = common.networks(setup, seeds, mask_sets)

    def finish(state, mask):
        final = train.evaluate(state.params, state.batch_stats, setup.train_data, model=setup.model,
                               batch_size=config.eval_batch_size)
        apply_fn = train.apply_fn_for(setup.model, state.batch_stats)
        out = {"train_accuracy": final["accuracy"], "train_loss": final["loss"],
               "nonzero": robustness.nonzero_parameters(mask),
               "lipschitz_input_gradient": jnp.max(robustness.input_jacobian_norms(apply_fn, state.params,
                                                                                  setup.train_data.x))}
        return out | ({"params": state.params} if config.model in MLP_MODELS else {})

    def block(params, batch_stats, masks_, keys):
        net_probe = probe and (lambda state: probe(train.apply_fn_for(setup.model, state.batch_stats), state.params))
        states = jax.vmap(lambda p, bs, m: train.init_state(masks.apply(p, m), bs, tx))(params, batch_stats, masks_)
        states, history, epochs = train_until_converged(
            states, masks_, setup.train_data, keys, model=setup.model, tx=tx, batch_size=config.batch_size,
            max_epochs=max_epochs, rule=rule, probe=net_probe)
        return jax.vmap(finish)(states, masks_) | {"epochs": epochs, "history": history}

    out = parallel.seed_map(block, setup.mesh, blockwise=True)(nets.params, nets.batch_stats, net_masks,
                                                                nets.order_keys)
    out = jax.tree.map(lambda a: np.asarray(a).reshape(cells, -1, *a.shape[1:]), parallel.to_host(out))
    if "params" in out:
        trained, grid_cells = out.pop("params"), np.ndindex(out["epochs"].shape)
        out["lipschitz_spectral_bound"] = np.array([robustness.spectral_norm_product(
            jax.tree.map(lambda w: w[c], trained)) for c in grid_cells]).reshape(out["epochs"].shape)
    return out


def validate(config) -> None:
    """Memorization keys; random labels need a classification task and no separate label noise."""
    check_methods(config, masking.methods())
    check_sparsities(config)
    validate_pruning(config)
    check_positive_int(config, "max_epochs")
    check_positive_int(config, "accuracy_patience")
    check_positive_int(config, "loss_window")
    check_positive_int(config, "min_epochs", minimum=0)
    check_choice(config, "task", ("classification",))
    check_choice(config, "lr_schedule", ("constant",))  # training length is open-ended: no schedule horizon
    for key in ("loss_tol", "accuracy_tol"):
        if not (isinstance(config[key], (int, float)) and config[key] >= 0):
            raise ConfigError(f"config.{key}={config[key]!r}: must be a number >= 0")
    if config.label_noise != 0:
        raise ConfigError(f"config.label_noise={config.label_noise!r}: must be 0 (every label is random already)")
    if config.dataset == "gaussian" and config.labels != "random":
        raise ConfigError(f"config.labels={config.labels!r}: must be 'random' for the memorization experiment")


def random_label_dataset(config) -> data.Dataset:
    """``config.dataset`` with uniformly random training labels fixed by ``data_seed`` (module docstring)."""
    dataset = data.load(config)
    return dataset if config.dataset == "gaussian" else with_label_noise(dataset, 1.0, config.data_seed)


def ordering(results: list[dict]) -> list[dict]:
    """Per sparsity: does every after-training method (imp, magnitude_after) memorize more, in the mean over seeds,
    than every at-initialization method (snip, grasp, synflow, random) present? (No Free Prune's claim.)"""
    rows = []
    for s in sorted({r["sparsity"] for r in results if r["method"] != "dense"}):
        mean = {r["method"]: float(np.mean(r["train_accuracy"])) for r in results if r["sparsity"] == s}
        after = [mean[m] for m in masking.AFTER_TRAINING if m in mean]
        init = [mean[m] for m in AT_INIT if m in mean]
        holds = bool(min(after) > max(init)) if after and init else None
        rows.append({"sparsity": s, "after_training_worst": min(after, default=None),
                     "at_init_best": max(init, default=None), "holds": holds})
    return rows


def run(config, workdir: str) -> dict:
    """The ``memorization`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("memorization")
    setup = common.setup(config, random_label_dataset(config))
    seeds = common.init_seeds(setup)
    n, d = setup.train_data.x.shape[0], int(np.prod(setup.train_data.x.shape[1:]))
    log(f"{config.num_seeds} seeds, {len(config.methods)} methods x {len(config.sparsities)} sparsities, "
        f"{config.model} on {config.dataset} with random labels ({n} points, {setup.dataset.num_classes} classes)")
    grid, cells = [jax.vmap(masks.ones)(seeds.params)], [("dense", 0.0)]
    for method in config.methods:
        by_sparsity = masking.method_masks(method, config, setup, seeds, config.sparsities, log,
                                           checkpoint_dir=os.path.join(workdir, wd.CHECKPOINTS, method))
        grid += [by_sparsity[s] for s in config.sparsities]
        cells += [(method, s) for s in config.sparsities]
        log(f"masks: {method}")
    rule = StopRule.from_config(config)
    out = train_all(config, setup, seeds, grid, max_epochs=config.max_epochs, rule=rule)
    sigma = robustness.random_label_std(setup.dataset.num_classes)
    results = []
    for c, (method, sparsity) in enumerate(cells):
        bound = out.get("lipschitz_spectral_bound")
        results.append({"method": method, "sparsity": sparsity, "train_accuracy": out["train_accuracy"][c],
                        "epochs": out["epochs"][c]} | robustness.summary(
            out["nonzero"][c], out["lipschitz_input_gradient"][c], None if bound is None else bound[c],
            sigma=sigma, num_examples=n, input_dim=d))
        log(f"{method:>15} sparsity {sparsity:.3f}: memorized {common.mean_std(out['train_accuracy'][c])}, "
            f"epochs {out['epochs'][c].tolist()}")
    summary = {"experiment": "memorization", "num_seeds": config.num_seeds, "num_examples": n, "input_dim": d,
               "num_classes": setup.dataset.num_classes, "label_std_sigma": sigma, "results": results,
               "ordering": ordering(results)}
    if parallel.is_primary():
        write_outputs(workdir, config, cells, out, results)
    log(f"paper ordering (after-training > at-init) holds at sparsities "
        f"{[r['sparsity'] for r in summary['ordering'] if r['holds']]}; outputs in {workdir}")
    return summary


def write_outputs(workdir: str, config, cells: list, out: dict, results: list[dict]) -> None:
    """metrics.jsonl (per method, sparsity, seed, epoch run) and the memorized-fraction figure."""
    records = [{"method": m, "sparsity": s, "seed": i, "epoch": e + 1,
                "train_loss": out["history"]["loss"][c, i, e], "train_accuracy": out["history"]["accuracy"][c, i, e]}
               for c, (m, s) in enumerate(cells) for i in range(config.num_seeds) for e in range(out["epochs"][c, i])]
    wd.write_jsonl(os.path.join(workdir, wd.METRICS), records)
    curves = {m: ([1.0 - s for s in config.sparsities],
                  np.stack([r["train_accuracy"] for r in results if r["method"] == m], axis=1))
              for m in config.methods}
    plotting.lines_vs_density(
        os.path.join(workdir, "memorization_vs_density.png"), curves, ylabel="memorized fraction (train accuracy)",
        title=f"Random-label memorization, {config.model} on {config.dataset} (± std over seeds)")
