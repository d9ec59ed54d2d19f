"""Experiment ``memorization``: how many randomly labelled points a sparse network can fit (No Free Prune §5).

Every seed's dense net is first trained from its initial weights θ_0 to convergence (the rule below): it is the
``dense`` row, IMP's round 0 and the net ``magnitude_after`` prunes (its train accuracy at pruning time is
``dense_at_pruning``). Masks at each of ``config.sparsities``, computed on the randomly labelled training set itself:

- ``imp``: iterative magnitude pruning with rewinding to θ_0, every round trained to convergence
  (:func:`imp_rounds`; the round at a target density IS the ``imp`` row there);
- ``magnitude_after``: the largest |θ_T| of the converged dense net, trained from θ_0 (rewind);
  ``magnitude_after_no_rewind``: the same mask, trained on from the pruned trained weights θ_T ⊙ m (Synaptic-Flow's
  singleshot, which does not rewind);
- the PaI methods (:func:`jaxprune.experiments.masking.method_masks`; ``scope``, ``synflow_rounds`` as configured);
- ``ablations=('shuffle',)``: for every method but random, ``<method>+shuffle`` permutes each layer's mask
  (:func:`jaxprune.experiments.masking.shuffled`, the pai experiment's control): the same layer densities, no
  data-dependent placement, the same start. ``A − A+shuffle`` is the part of A's capacity that comes from WHERE its
  mask puts the weights, not how many per layer.

Every masked network (methods × sparsities × controls × seeds) then trains in ONE jitted, doubly vmapped call until
it converges; its memorized fraction, the accuracy on its own training set in inference mode, is reported with the
mask's nominal and effective densities (:func:`jaxprune.experiments.masking.mask_report`), its epochs and
``hit_cap``, its Lipschitz estimates and the Law-of-Robustness scale (:mod:`jaxprune.robustness`), and methods are
compared pairwise over the shared seeds (``comparisons``, :func:`jaxprune.stats.comparisons`: mean paired
difference with a 95% t interval).

Random labels: ``gaussian`` data with ``labels='random'`` (y ~ Uniform{0..K−1} independent of x, drawn from
``data_seed``); any other dataset has every training label re-drawn uniformly (label noise of fraction 1, key of
``data_seed``). With ``label_noise`` = q > 0 (a real dataset, or gaussian with ``labels='teacher'``) only a fraction q
is re-drawn, and each row also reports ``noisy_fitted`` (fraction of the re-drawn labels the net reproduces) and
``clean_fitted`` (its accuracy on the others). The labels are fixed by ``data_seed`` and shared by all model seeds.

Convergence rule, with L_e, A_e the loss and accuracy on the whole training set in inference mode after epoch
e = 1, 2, …: stop after epoch e ≥ ``min_epochs`` if

  (``stop_rule='plateau'``)        e > w and |L_e − L_{e−w}| < loss_tol,
  (``stop_rule='interpolation'``)  L_e ≤ loss_tol,
  or (either reading)              p > 0, e > p and max_{e−p < k ≤ e} |A_k − A_{e−p}| ≤ accuracy_tol,

w = ``loss_window``, p = ``accuracy_patience`` (0: no accuracy clause), else at ``max_epochs`` (``hit_cap``). The
paper: "till convergence in loss to within 0.01 (or until accuracy doesn't change for three consecutive epochs)".
Which reading and window measure capacity (the defaults) is measured and argued in the README.

Every network is frozen (state and history) from the epoch its rule fires, so it stops at its own epoch without a
host sync; the networks train in small blocks (:func:`jaxprune.parallel.seed_map`), each block in a
``while_loop`` that ends when all of its networks have stopped (:func:`train_until_converged`, usable on its own
for any block of masked networks; :func:`train_all` for stacked seeds × mask sets).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, irp, masks, metrics, parallel, plotting, robustness, stats, train
from jaxprune.config import check_choice, check_methods, check_positive_int, check_sparsities, validate_pruning
from jaxprune.data.noise import with_label_noise
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import pai as pai_experiment

MLP_MODELS = ("mlp", "lenet300_100")  # models the spectral-norm-product bound applies to
AT_INIT = ("snip", "grasp", "synflow", "random")  # the paper's at-initialization methods (ordering check)
NO_REWIND = "magnitude_after_no_rewind"  # magnitude_after without rewinding: the pruned trained weights train on
ABLATIONS = ("shuffle",)  # the pai experiment's spelling: rows '<method>+shuffle'


STOP_RULES = ("plateau", "interpolation")


class StopRule(NamedTuple):
    """The convergence rule of the module docstring; ``reading`` is one of :data:`STOP_RULES`."""

    loss_tol: float
    loss_window: int
    accuracy_patience: int
    accuracy_tol: float
    min_epochs: int = 0
    reading: str = "plateau"

    @classmethod
    def from_config(cls, config) -> StopRule:
        return cls(config.loss_tol, config.loss_window, config.accuracy_patience, config.accuracy_tol,
                   config.min_epochs, config.stop_rule)


def should_stop(rule: StopRule, losses: jax.Array, accuracies: jax.Array, epochs_done: jax.Array) -> jax.Array:
    """Whether to stop after ``epochs_done`` = e epochs (module docstring).

    ``losses``/``accuracies`` [max_epochs] hold L_k, A_k at index k − 1."""
    e, w, p = epochs_done, rule.loss_window, rule.accuracy_patience
    if rule.reading == "interpolation":
        loss_done = losses[e - 1] <= rule.loss_tol
    else:
        loss_done = (e > w) & (jnp.abs(losses[e - 1] - losses[jnp.maximum(e - 1 - w, 0)]) < rule.loss_tol)
    window = accuracies[jnp.clip(e - 1 - p + jnp.arange(p + 1), 0)]  # A_{e−p}, …, A_e
    accuracy_flat = (p > 0) & (e > p) & (jnp.max(jnp.abs(window - window[0])) <= rule.accuracy_tol)
    return (e >= rule.min_epochs) & (loss_done | accuracy_flat)


class Fit(NamedTuple):
    """What :func:`train_until_converged` returns for a block of networks (leading block axis everywhere)."""

    states: train.TrainState  # final (frozen) states
    history: dict  # 'loss', 'accuracy' (and 'probe/<name>'): [block, max_epochs], NaN after each stopping epoch
    epochs: jax.Array  # epochs each network trained
    converged: jax.Array  # whether its rule fired (False: it hit max_epochs, or rule is None)


def train_until_converged(
    states: train.TrainState, masks_, data_: train.Data, keys: jax.Array, *, model, tx, batch_size: int,
    max_epochs: int, rule: StopRule | None, probe: Callable | None = None, eval_batch_size: int = 1000,
) -> Fit:
    """A BLOCK of masked networks (a leading axis on ``states``, ``masks_``, ``keys``) trained epoch by epoch, epoch e
    of network i with data order ``fold_in(keys[i], e)``, each frozen (state and history) from the epoch its
    ``rule`` fires (never if None); the loop ends when every network has stopped, or at ``max_epochs``.

    After every epoch the whole training set is evaluated in inference mode: L_e, A_e of the rule (``history``
    'loss', 'accuracy'), and ``probe(state) -> {name: scalar}`` if given ('probe/<name>').
    A frozen network's state is exactly that of a lone run of its epoch count, whatever the others do. The epoch
    index is shared by the block, so every step's data-order switch stays a branch (not a per-network select).
    One network: add a block axis of 1 (``jax.tree.map(lambda a: a[None], ...)``); ``jax.jit`` it.
    """
    per_epoch = train.steps_per_epoch(data_.x.shape[0], batch_size)
    size = keys.shape[0]

    def one_epoch(state, mask, key, e):
        trained, _, _ = train.train_steps(state, mask, data_, key, e * per_epoch, model=model, tx=tx,
                                          num_steps=per_epoch, batch_size=batch_size)
        fit = train.evaluate(trained.params, trained.batch_stats, data_, model=model, batch_size=eval_batch_size)
        return trained, fit | ({f"probe/{k}": v for k, v in probe(trained).items()} if probe else {})

    names = jax.eval_shape(one_epoch, jax.tree.map(lambda a: a[0], states), jax.tree.map(lambda a: a[0], masks_),
                           keys[0], 0)[1]
    history = {k: jnp.full((size, max_epochs), jnp.nan, jnp.float32) for k in names}

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
    _, states, history, epochs, done = jax.lax.while_loop(running, epoch, start)
    return Fit(states, history, epochs, done)


_PROGRAMS: dict = {}  # the last train_all program: (setup, seed_map) by (config, max_epochs, rule, probe, keep)


def train_all(config, setup: common.Setup, seeds: common.Seeds, mask_sets: list, *, max_epochs: int,
              rule: StopRule | None, probe: Callable | None = None, starts: list | None = None,
              keep_params: bool = False) -> dict:
    """Train every seed's network under each of the C stacked mask sets: the C · seeds networks
    (:func:`jaxprune.experiments.common.networks`) are the units of one :func:`jaxprune.parallel.seed_map` call,
    trained in blocks until they converge (:func:`train_until_converged`). Network (c, i) starts from
    ``starts[c]`` (stacked [seeds, ...] weights, masked before training) where given and not None, else from seed
    i's initial weights. ``probe(apply_fn, params) -> {name: scalar}`` is recorded after every epoch.

    Returns host arrays [C, seeds, ...]: ``train_accuracy``/``train_loss`` (whole training set, inference mode),
    ``fit_sq_error`` (mean squared error of the fit: ‖softmax(f(x_i)) − e_{y_i}‖² for labels, (f(x_i) − y_i)² for
    regression), ``fitted`` (per training example: prediction equals its label; [C, seeds, n] bool),
    ``epochs``, ``hit_cap`` (ran ``max_epochs`` without its rule firing), ``history`` (per-epoch),
    ``nonzero`` (‖m‖₀), ``lipschitz_input_gradient``, for MLPs ``lipschitz_spectral_bound``, and with
    ``keep_params`` the final masked weights ``params``."""
    tx = train.optimizer_from_config(config, train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size))
    cells = len(mask_sets)
    nets, net_masks = common.networks(setup, seeds, mask_sets)
    if starts is not None and any(s is not None for s in starts):
        params = [seeds.params if s is None else s for s in starts]
        nets = nets._replace(params=setup.shard(jax.tree.map(lambda *p: jnp.concatenate(p), *params)))
    data_ = setup.train_data

    def finish(state, mask):
        final = train.evaluate(state.params, state.batch_stats, data_, model=setup.model,
                               batch_size=config.eval_batch_size)
        apply_fn = train.apply_fn_for(setup.model, state.batch_stats)
        outputs = jax.lax.map(lambda x: apply_fn(state.params, x[None])[0], data_.x,
                              batch_size=min(config.eval_batch_size, data_.x.shape[0]))
        if jnp.issubdtype(data_.y.dtype, jnp.integer):
            probs = jax.nn.softmax(outputs)
            sq_error = jnp.sum(probs ** 2, -1) - 2 * jnp.take_along_axis(probs, data_.y[:, None], -1)[:, 0] + 1
            fitted = jnp.argmax(outputs, -1) == data_.y
        else:
            sq_error, fitted = (outputs[:, 0] - data_.y) ** 2, jnp.zeros(data_.y.shape, bool)
        out = {"train_accuracy": final["accuracy"], "train_loss": final["loss"], "fit_sq_error": jnp.mean(sq_error),
               "fitted": fitted, "nonzero": robustness.nonzero_parameters(mask),
               "lipschitz_input_gradient": jnp.max(robustness.input_jacobian_norms(apply_fn, state.params, data_.x))}
        return out | ({"params": state.params} if keep_params or config.model in MLP_MODELS else {})

    def block(params, batch_stats, masks_, keys):
        net_probe = probe and (lambda state: probe(train.apply_fn_for(setup.model, state.batch_stats), state.params))
        states = jax.vmap(lambda p, bs, m: train.init_state(masks.apply(p, m), bs, tx))(params, batch_stats, masks_)
        fit = train_until_converged(states, masks_, data_, keys, model=setup.model, tx=tx,
                                    batch_size=config.batch_size, max_epochs=max_epochs, rule=rule, probe=net_probe,
                                    eval_batch_size=config.eval_batch_size)
        hit_cap = ~fit.converged if rule else jnp.zeros_like(fit.converged)
        return jax.vmap(finish)(fit.states, masks_) | {"epochs": fit.epochs, "hit_cap": hit_cap,
                                                       "history": fit.history}

    key = (config.to_json_best_effort(), max_epochs, rule, probe, keep_params)
    if _PROGRAMS.get(key, (None,))[0] is not setup:  # one compile per run, not one per IMP round
        _PROGRAMS.clear()
        _PROGRAMS[key] = (setup, parallel.seed_map(block, setup.mesh, blockwise=True))
    out = _PROGRAMS[key][1](nets.params, nets.batch_stats, net_masks, nets.order_keys)
    out = jax.tree.map(lambda a: np.asarray(a).reshape(cells, -1, *a.shape[1:]), parallel.to_host(out))
    if config.model in MLP_MODELS:
        out["lipschitz_spectral_bound"] = np.array([robustness.spectral_norm_product(
            jax.tree.map(lambda w: w[c], out["params"])) for c in np.ndindex(out["epochs"].shape)]
        ).reshape(out["epochs"].shape)
    if not keep_params:
        out.pop("params", None)
    return out


def methods() -> tuple[str, ...]:
    """Every method memorization builds masks with: :func:`jaxprune.experiments.masking.methods` and
    :data:`NO_REWIND`."""
    return masking.methods() + (NO_REWIND,)


def validate(config) -> None:
    """Memorization keys: :func:`validate_training`, classification with random labels (or ``label_noise``)."""
    validate_training(config)
    check_choice(config, "task", ("classification",))
    if config.dataset == "gaussian" and (config.labels == "random") != (config.label_noise == 0):
        raise ConfigError(f"config.labels={config.labels!r} with config.label_noise={config.label_noise!r}: gaussian "
                          "memorization takes labels='random' (every label random) or labels='teacher' with a "
                          "label_noise fraction > 0")


def validate_training(config) -> None:
    """The keys of :func:`method_cells` and the training to convergence: methods, sparsities, ablations, pruning
    and the stop rule (memorization and noise correlation)."""
    check_methods(config, methods())
    check_sparsities(config)
    if config.ablations != ():
        check_methods(config, ABLATIONS, key="ablations")
    validate_pruning(config)
    check_choice(config, "stop_rule", STOP_RULES)
    check_positive_int(config, "max_epochs")
    check_positive_int(config, "accuracy_patience", minimum=0)
    check_positive_int(config, "loss_window")
    check_positive_int(config, "min_epochs", minimum=0)
    check_choice(config, "lr_schedule", ("constant",))  # training length is open-ended: no schedule horizon
    check_choice(config, "rewind_step", (0,))  # IMP here rewinds to the initialization
    for key in ("loss_tol", "accuracy_tol"):
        if not (isinstance(config[key], (int, float)) and config[key] >= 0):
            raise ConfigError(f"config.{key}={config[key]!r}: must be a number >= 0")


def random_label_dataset(config) -> data.Dataset:
    """``config.dataset`` with random training labels fixed by ``data_seed`` (module docstring): every label
    (``label_noise`` 0), or the ``label_noise`` fraction (recorded in ``corrupted``)."""
    dataset = data.load(config)
    if config.label_noise > 0 or config.dataset == "gaussian":
        return dataset
    return with_label_noise(dataset, 1.0, config.data_seed)


def pretrain_dense(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, probe=None) -> dict:
    """Every seed's dense net trained from its initial weights under ``rule``: round 0 of IMP, the net that
    ``magnitude_after`` prunes, and the ``dense`` row. :func:`train_all`'s outputs [seeds, ...], with ``params``."""
    return cell(train_all(config, setup, seeds, [jax.vmap(masks.ones)(seeds.params)], max_epochs=config.max_epochs,
                          rule=rule, probe=probe, keep_params=True), 0)


def fit_summary(fit: dict, regression: bool) -> str:
    """'train loss …, accuracy …, epochs […]' of trained nets (no accuracy for regression: it has none)."""
    accuracy = "" if regression else f", accuracy {common.mean_std(fit['train_accuracy'])}"
    return f"train loss {common.mean_std(fit['train_loss'])}{accuracy}, epochs {fit['epochs'].tolist()}"


def imp_rounds(config, setup: common.Setup, seeds: common.Seeds, dense: dict, rule: StopRule, log,
               probe=None) -> dict:
    """Iterative magnitude pruning with rewinding to θ_0, every round trained under ``rule``: from the pre-trained
    dense nets, round r keeps the largest-|θ| survivors of round r − 1's trained weights at density d_r
    (:func:`jaxprune.irp.schedule` through every target of ``config.sparsities``, ``config.scope``) and trains
    that mask from θ_0. Returns {d_r: (stacked masks, :func:`train_all` outputs of round r with ``params``)}."""
    densities = irp.schedule(config.prune_fraction, targets=[1.0 - s for s in config.sparsities])
    prune = parallel.seed_map(lambda p, m, d: irp.magnitude_prune(p, m, d, config.scope), setup.mesh,
                              in_axes=(0, 0, None), one_device=True)
    trained, mask, rounds = dense["params"], jax.vmap(masks.ones)(seeds.params), {}
    for density in common.staged(log, "IMP rounds, each trained to convergence", densities, "rounds"):
        mask = prune(trained, mask, jnp.float32(density))
        fit = cell(train_all(config, setup, seeds, [mask], max_epochs=config.max_epochs, rule=rule, probe=probe,
                             keep_params=True), 0)
        rounds[density], trained = (mask, fit), fit["params"]
        log(f"imp round at density {density:.4f}: {fit_summary(fit, setup.dataset.num_classes == 0)}")
    return rounds


def cell(out: dict, c: int) -> dict:
    """Mask set ``c``'s part of :func:`train_all`'s outputs (every leaf [C, seeds, ...] → [seeds, ...])."""
    return jax.tree.map(lambda a: a[c], out)


def comparison_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """The pairs (A, B) compared: every method against its ``+shuffle`` control, rewinding against not, every
    after-training method against every at-initialization method (those present)."""
    present = list(dict.fromkeys(r["method"] for r in rows))
    after = [m for m in (*masking.AFTER_TRAINING, NO_REWIND) if m in present]
    pairs = [(m, f"{m}+{a}") for m in present for a in ABLATIONS if f"{m}+{a}" in present]
    pairs += [("magnitude_after", NO_REWIND)] if {"magnitude_after", NO_REWIND} <= set(present) else []
    return pairs + [(a, b) for a in after for b in AT_INIT if b in present]


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


def method_cells(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, log, probe=None) -> tuple:
    """(cells to train, trained cells, IMP rounds, dense pre-training): (method, sparsity, stacked masks, start
    weights or None) for every method of ``config.methods`` at every ``config.sparsities`` but IMP, and every
    ``config.ablations`` control (the shuffled masks, same start); (method, sparsity, masks, outputs) for the nets
    trained already (``probe`` recorded): the dense net and IMP; the IMP rounds of :func:`imp_rounds` ({} without
    IMP); :func:`pretrain_dense`'s outputs, or None when no method needs a trained net (then the dense row is
    among the cells to train)."""
    ones = jax.vmap(masks.ones)(seeds.params)
    dense = None
    if set(config.methods) & {*masking.AFTER_TRAINING, NO_REWIND}:
        with common.stage(log, "dense pre-training to convergence", config.num_seeds, "networks"):
            dense = pretrain_dense(config, setup, seeds, rule, probe)
    if dense is None:
        to_train, done = [("dense", 0.0, ones, None)], []
    else:
        to_train, done = [], [("dense", 0.0, ones, dense)]
        log(f"dense pre-training: {fit_summary(dense, setup.dataset.num_classes == 0)}")
    rounds, after_training = {}, {}  # after_training: the largest-|θ_T| masks, shared by both magnitude_after rows
    for method in config.methods:
        start = dense["params"] if method == NO_REWIND else None
        if method == "imp":
            rounds = imp_rounds(config, setup, seeds, dense, rule, log, probe)
            at = {s: rounds.get(1.0 - s, (ones, dense)) for s in config.sparsities}  # sparsity 0: the dense net
            by_sparsity = {s: mask for s, (mask, _) in at.items()}
            done += [("imp", s, mask, fit) for s, (mask, fit) in at.items()]
        elif method in ("magnitude_after", NO_REWIND):
            if not after_training:
                prune = parallel.seed_map(lambda p, s: masks.largest_magnitude(p, s, config.scope), setup.mesh,
                                          in_axes=(0, None), one_device=True)
                after_training = {s: prune(dense["params"], jnp.float32(s)) for s in config.sparsities}
            by_sparsity = after_training
        else:
            by_sparsity = masking.method_masks(method, config, setup, seeds, config.sparsities, log)
        if method != "imp":
            to_train += [(method, s, m, start) for s, m in by_sparsity.items()]
        for ablation in filter(lambda a: pai_experiment.ablation_applies(a, method), config.ablations):
            to_train += [(f"{method}+{ablation}", s, m, start)
                         for s, m in masking.shuffled(setup, seeds, by_sparsity).items()]
        log(f"masks: {method}")
    return to_train, done, rounds, dense


def train_cells(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, log, probe=None) -> tuple:
    """Every net of :func:`method_cells` trained under ``rule`` (``probe`` recorded): ([(method, sparsity, stacked
    masks, :func:`train_all` outputs [seeds, ...])], the nets trained already first; IMP rounds; dense pre-training
    or None). The nets still to train train in one :func:`train_all` call."""
    to_train, done, rounds, dense = method_cells(config, setup, seeds, rule, log, probe)
    with common.stage(log, "training the masked networks to convergence (one compiled call)",
                      len(to_train) * config.num_seeds, "networks"):
        out = train_all(config, setup, seeds, [m for _, _, m, _ in to_train], max_epochs=config.max_epochs,
                        rule=rule, probe=probe, starts=[start for *_, start in to_train]) if to_train else {}
    return done + [(m, s, stacked, cell(out, c)) for c, (m, s, stacked, _) in enumerate(to_train)], rounds, dense


def rows_by_method(results: list[dict]) -> dict[str, list[dict]]:
    """results.json rows grouped by method in their order, the ``dense`` reference left out (the figures' curves)."""
    grouped = {}
    for r in results:
        if r["method"] != "dense":
            grouped.setdefault(r["method"], []).append(r)
    return grouped


def result_row(method: str, sparsity: float, out: dict, report: dict, dataset: data.Dataset, sigma: float) -> dict:
    """One results.json row: per-seed fit, stopping, mask densities, robustness and, with label noise, the
    fraction of the noisy labels fitted and of the clean ones."""
    n, d = dataset.x_train.shape[0], int(np.prod(dataset.x_train.shape[1:]))
    row = {"method": method, "sparsity": float(sparsity), "train_accuracy": out["train_accuracy"],
           "train_loss": out["train_loss"], "epochs": out["epochs"], "hit_cap": out["hit_cap"], **report}
    if 0 < dataset.corrupted.sum() < n:
        row |= {"noisy_fitted": out["fitted"][:, dataset.corrupted].mean(1),
                "clean_fitted": out["fitted"][:, ~dataset.corrupted].mean(1)}
    return row | robustness.summary(out["nonzero"], out["lipschitz_input_gradient"],
                                    out.get("lipschitz_spectral_bound"), sigma=sigma, num_examples=n, input_dim=d,
                                    fit_sq_error=out["fit_sq_error"])


def run(config, workdir: str) -> dict:
    """The ``memorization`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("memorization")
    setup = common.setup(config, random_label_dataset(config))
    seeds = common.init_seeds(setup)
    dataset, rule = setup.dataset, StopRule.from_config(config)
    n = dataset.x_train.shape[0]
    log(f"{config.num_seeds} seeds, {len(config.methods)} methods x {len(config.sparsities)} sparsities, ablations "
        f"{tuple(config.ablations)}, {config.model} on {config.dataset} ({n} points, {dataset.num_classes} "
        f"classes, {'all' if not 0 < dataset.corrupted.sum() < n else dataset.corrupted.sum()} labels random), "
        f"stop rule {config.stop_rule}")
    cells, rounds, dense = train_cells(config, setup, seeds, rule, log)
    sigma = robustness.random_label_std(dataset.num_classes)
    results = []
    for method, sparsity, stacked, fit in cells:
        results.append(result_row(method, sparsity, fit, masking.mask_report(setup, seeds, stacked), dataset, sigma))
        capped = f", {int(fit['hit_cap'].sum())} capped" if fit["hit_cap"].any() else ""
        log(f"{method:>28} sparsity {sparsity:.3f}: memorized {common.mean_std(fit['train_accuracy'])}, "
            f"epochs {fit['epochs'].tolist()}{capped}")
    comparisons = stats.comparisons(results, "train_accuracy", comparison_pairs(results))
    summary = {"experiment": "memorization", "num_seeds": config.num_seeds, "num_examples": n,
               "input_dim": int(np.prod(dataset.x_train.shape[1:])), "num_classes": dataset.num_classes,
               "label_noise": config.label_noise, "label_std_sigma": sigma, "scope": config.scope,
               "synflow_rounds": config.synflow_rounds, "ablations": list(config.ablations),
               "stop_rule": rule._asdict() | {"max_epochs": config.max_epochs},
               "num_capped": int(sum(r["hit_cap"].sum() for r in results)),
               "num_networks": len(results) * config.num_seeds,
               "dense_at_pruning": None if dense is None else {
                   k: dense[k] for k in ("train_accuracy", "train_loss", "epochs", "hit_cap")},
               "imp_rounds": [{"density": density, **{k: fit[k] for k in ("train_accuracy", "epochs", "hit_cap")}}
                              for density, (_, fit) in rounds.items()],
               "results": results, "comparisons": comparisons, "ordering": ordering(results)}
    if parallel.is_primary():
        write_outputs(workdir, config, cells, results, comparisons)
    holds = [f"{r['sparsity']:g}" for r in summary["ordering"] if r["holds"]]
    log(f"{summary['num_capped']} of {summary['num_networks']} networks hit max_epochs; paper ordering "
        f"(after-training > at-init, in the mean over seeds) "
        f"{'holds at sparsities ' + ', '.join(holds) if holds else 'holds at no sparsity'}; outputs in {workdir}")
    return summary


def write_outputs(workdir: str, config, cells: list, results: list[dict], comparisons: list[dict]) -> None:
    """metrics.jsonl (per method, sparsity, seed, epoch run), the memorized-fraction figure (capped networks
    circled) and the paired-difference figure."""
    records = [{"method": m, "sparsity": s, "seed": i, "epoch": e + 1, "train_loss": fit["history"]["loss"][i, e],
                "train_accuracy": fit["history"]["accuracy"][i, e]}
               for m, s, _, fit in cells for i in range(config.num_seeds) for e in range(fit["epochs"][i])]
    with metrics.fresh(workdir, config.num_seeds) as writer:  # one compiled call trains them all: no earlier lines
        writer.append(records)
        writer.rows(results, ("train_accuracy",))
    by_method = rows_by_method(results)
    curves = {m: ([1.0 - r["sparsity"] for r in rows], np.stack([r["train_accuracy"] for r in rows], axis=1))
              for m, rows in by_method.items()}
    capped = {m: np.stack([r["hit_cap"] for r in rows], axis=1) for m, rows in by_method.items()}
    plotting.lines_vs_density(
        os.path.join(workdir, "memorization_vs_density.png"), curves, ylabel="memorized fraction (train accuracy)",
        title=f"Memorization, {config.model} on {config.dataset} (± sd; x: hit max_epochs)",
        flagged=capped)
    if comparisons:
        plotting.paired_differences(os.path.join(workdir, "paired_differences.png"), comparisons,
                                    title="Memorized fraction: paired differences over seeds (95% t interval)")
