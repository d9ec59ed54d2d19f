"""Experiment ``memorization``: how many randomly labelled points a sparse network can fit (No Free Prune §5).

Every seed's dense net is first trained from its initial weights θ_0 to convergence (the rule below): it is the
``dense`` row, IMP's round 0 and the net ``magnitude_after`` prunes (its train accuracy at pruning time is
``dense_at_pruning``). Masks at each of ``config.sparsities``, computed on the randomly labelled training set itself:

- ``imp``: iterative magnitude pruning with rewinding to θ_0, every round trained to convergence
  (:func:`imp_rounds`; the round at a target density IS the ``imp`` row there);
- ``magnitude_after``: the largest |θ_T| of the converged dense net, trained from θ_0 (rewind);
  ``magnitude_after_no_rewind``: the same mask, trained on from the pruned trained weights θ_T ⊙ m (Synaptic-Flow's
  singleshot, which does not rewind), with a fresh optimizer state (``no_rewind_optimizer='reset'``) or the dense
  net's (``'carry'``, as Synaptic-Flow's singleshot, which reloads the pre-training optimizer with the model);
- the PaI methods (:func:`jaxprune.experiments.masking.method_masks`; ``scope``, ``synflow_rounds`` as configured);
- ``ablations``, controls that replace the mask only (same start, same training), each adding rows
  ``<method>+<control>`` for every method but random (:func:`control_masks`):

  - ``shuffle``: each layer's mask permuted (:func:`jaxprune.experiments.masking.shuffled`, the pai experiment's
    control): the same layer densities, no placement. It also cuts paths (effective density falls).
  - ``swap``: the mask the method finds on D′, an independent draw of the data with everything else kept: the same
    inputs, initial weights, keys and data order, only the random labels (here) or the noise (noise correlation)
    drawn again (:func:`redrawn_dataset`); trained and measured on D. ``A − A+swap`` is the capacity A's mask owes
    to information about THIS dataset; a data-independent method (random, magnitude, SynFlow) finds the same mask
    on D′, so its difference is exactly 0, which calibrates the control.
  - ``rewire``: each layer's mask rewired keeping every unit's exact in- and out-degree (:mod:`jaxprune.rewire`,
    ``rewire_swaps_per_edge`` attempted double-edge swaps per edge; the chains' mixing diagnostic in the row's
    ``rewire_mixing``): the weights per unit, the dead units and, for one hidden layer, the path counts stay;
    which edges are kept becomes random. ``A − A+rewire`` separates "which edges" from "which units".

Every masked network (methods × sparsities × controls × seeds) then trains in ONE jitted, doubly vmapped call until
it converges; its memorized fraction — ``train_accuracy``, the accuracy on its own training set in inference mode,
and ``memorized``, the fraction of points with cross-entropy ≤ ``memorized_loss_max`` (No Free Prune's criterion,
:func:`memorized_points`; ``memorization_metric`` picks the one figures and comparisons use) — is reported with the
mask's nominal and effective densities (:func:`jaxprune.experiments.masking.mask_report`), its epochs and
``hit_cap``, its Lipschitz estimates and the Law-of-Robustness scale (:mod:`jaxprune.robustness`), and methods are
compared pairwise over the shared seeds (``comparisons``, :func:`jaxprune.stats.comparisons`: mean paired
difference with a 95% t interval).

Random labels: ``gaussian`` data with ``labels='random'`` (y ~ Uniform{0..K−1} independent of x, drawn from
``data_seed``); any other dataset has every training label re-drawn uniformly (label noise of fraction 1, key of
``data_seed``). With ``label_noise`` = q > 0 (a real dataset, or gaussian with ``labels='teacher'``) only a fraction q
is re-drawn, and each row also reports ``noisy_fitted`` (fraction of the re-drawn labels the net reproduces) and
``clean_fitted`` (its accuracy on the others). The labels are fixed by ``data_seed`` and shared by all model seeds,
or, with ``data_per_seed``, every seed draws its own Gaussian dataset (:func:`jaxprune.data.draw`). A network whose
loss goes non-finite is listed in its row's ``failed_seeds`` and left out of means and pairs (:func:`with_failures`).

Convergence rule, with L_e, A_e the loss and accuracy on the whole training set in inference mode after epoch
e = 1, 2, …: stop after epoch e ≥ ``min_epochs`` if

  (``stop_rule='plateau'``)        e > w and |L_e − L_{e−w}| < loss_tol,
  (``stop_rule='interpolation'``)  L_e ≤ loss_tol,
  or (either reading)              p > 0, e > p and max_{e−p < k ≤ e} |A_k − A_{e−p}| ≤ accuracy_tol,

w = ``loss_window``, p = ``accuracy_patience`` (0: no accuracy clause), else at ``max_epochs`` (``hit_cap``). The
paper: "till convergence in loss to within 0.01 (or until accuracy doesn't change for three consecutive epochs)".
Which reading and window measure capacity (the defaults) is measured and argued in docs/memorization.md.

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
import optax

from jaxprune import data, irp, masks, metrics, models, parallel, plotting, robustness, stats, train
from jaxprune.config import check_choice, check_methods, check_positive_int, check_sparsities, validate_pruning
from jaxprune.data.noise import redrawn, with_label_noise
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import pai as pai_experiment

MLP_MODELS = models.DENSE_ONLY  # models the spectral-norm-product bound applies to
AT_INIT = ("snip", "grasp", "synflow", "random")  # the paper's at-initialization methods (ordering check)
DATA_PER_SEED = True  # config.data_per_seed: every seed trains on its own dataset
NO_REWIND = "magnitude_after_no_rewind"  # magnitude_after without rewinding: the pruned trained weights train on
SWAP_STREAM = 5  # per-seed data: seed i's D′ drawn from fold_in(init_key_i, SWAP_STREAM)
ABLATIONS = ("shuffle", "swap", "rewire")  # controls, rows '<method>+<control>' (module docstring)


STOP_RULES = ("plateau", "interpolation")
# A train_all call of at least this many networks reports them as they finish (seed_map's on_block): progress from
# inside a long call, at the price of a compile per process (a program with a host callback misses JAX's persistent
# cache); smaller calls take seconds and keep the cache.
PROGRESS_MIN_NETWORKS = 256
METRICS = ("train_accuracy", "memorized")  # config.memorization_metric: figures, comparisons, ordering


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


def memorized_points(logits: jax.Array, labels: jax.Array, loss_max: float) -> jax.Array:
    """Per training point, whether it is memorized as No Free Prune counts it: its cross-entropy
    −log softmax(f(x_i))_{y_i} ≤ ``loss_max`` (the paper's "predictions within (log 2)/10": log 2 is the loss of a
    50/50 prediction, so with ``loss_max`` = log(2)/10 ≈ 0.0693 a point counts only when p(y_i | x_i) ≥ 2^(−1/10)
    ≈ 0.933). Argmax accuracy (``train_accuracy``) counts a 51/49 prediction as well."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels) <= loss_max


class Fit(NamedTuple):
    """What :func:`train_until_converged` returns for a block of networks (leading block axis everywhere)."""

    states: train.TrainState  # final (frozen) states
    history: dict  # 'loss', 'accuracy' (and 'probe/<name>'): [block, max_epochs], NaN after each stopping epoch
    epochs: jax.Array  # epochs each network trained
    converged: jax.Array  # whether its rule fired (False: it hit max_epochs, failed, or rule is None)


def train_until_converged(
    states: train.TrainState, masks_, data_: train.Data, keys: jax.Array, *, model, tx, batch_size: int,
    max_epochs: int, rule: StopRule | None, probe: Callable | None = None, eval_batch_size: int = 1000,
    data_axis: int | None = None, probe_data=None,
) -> Fit:
    """A BLOCK of masked networks (a leading axis on ``states``, ``masks_``, ``keys``) trained epoch by epoch, epoch e
    of network i with data order ``fold_in(keys[i], e)``, each frozen (state and history) from the epoch its
    ``rule`` fires (never if None); the loop ends when every network has stopped, or at ``max_epochs``. ``data_`` is
    shared by the block (``data_axis=None``) or every network's own (``data_axis=0``: a leading block axis), and
    so is ``probe_data``.

    After every epoch the whole training set is evaluated in inference mode: L_e, A_e of the rule (``history``
    'loss', 'accuracy'), and ``probe(state, probe_data) -> {name: scalar}`` if given ('probe/<name>').
    A frozen network's state is exactly that of a lone run of its epoch count, whatever the others do. The epoch
    index is shared by the block, so every step's data-order switch stays a branch (not a per-network select).
    One network: add a block axis of 1 (``jax.tree.map(lambda a: a[None], ...)``); ``jax.jit`` it.
    A network whose loss goes non-finite (``states.failed_step`` ≥ 0, :func:`jaxprune.train.train_step` then
    freezes its weights) stops at the end of that epoch and is not ``converged``.
    """
    per_epoch = train.steps_per_epoch(data_.x.shape[0 if data_axis is None else 1], batch_size)
    size = keys.shape[0]

    def one_epoch(state, mask, key, data, e):
        trained, _, _ = train.train_steps(state, mask, data[0], key, e * per_epoch, model=model, tx=tx,
                                          num_steps=per_epoch, batch_size=batch_size)
        fit = train.evaluate(trained.params, trained.batch_stats, data[0], model=model, batch_size=eval_batch_size)
        return trained, fit | ({f"probe/{k}": v for k, v in probe(trained, data[1]).items()} if probe else {})

    both = (data_, probe_data)
    history = empty_history(one_epoch, states, masks_, keys, both, data_axis, max_epochs)

    def running(carry):
        e, *_, done = carry
        return (e < max_epochs) & ~jnp.all(done)

    def epoch(carry):
        e, states, history, epochs, done = carry
        trained, metrics = jax.vmap(one_epoch, in_axes=(0, 0, 0, data_axis, None))(states, masks_, keys, both, e)
        recorded = {k: v.at[:, e].set(metrics[k]) for k, v in history.items()}
        stop = (jax.vmap(functools.partial(should_stop, rule), in_axes=(0, 0, None))(
            recorded["loss"], recorded["accuracy"], e + 1) if rule else jnp.zeros(size, bool))
        stop = stop | (trained.failed_step >= 0)
        return (e + 1, frozen(done, trained, states), frozen(done, recorded, history),
                jnp.where(done, epochs, e + 1), done | stop)

    start = (jnp.int32(0), states, history, jnp.zeros(size, jnp.int32), jnp.zeros(size, bool))
    _, states, history, epochs, done = jax.lax.while_loop(running, epoch, start)
    return Fit(states, history, epochs, done & (states.failed_step < 0))


def empty_history(one_epoch: Callable, states: train.TrainState, masks_, keys: jax.Array, both: tuple,
                  data_axis: int | None, max_epochs: int) -> dict:
    """{metric: NaN [block, max_epochs]} for every metric ``one_epoch(state, mask, key, both, e) -> (state,
    metrics)`` of :func:`train_until_converged` returns for one network (shapes only, nothing is computed)."""
    first = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
    names = jax.eval_shape(one_epoch, first(states), first(masks_), keys[0],
                           both if data_axis is None else first(both), 0)[1]
    return {k: jnp.full((keys.shape[0], max_epochs), jnp.nan, jnp.float32) for k in names}


def frozen(done: jax.Array, new, old):
    """``old`` for the networks that are ``done`` (a leading block axis on every leaf), ``new`` for the others."""
    return jax.tree.map(lambda n, o: jnp.where(done.reshape(-1, *[1] * (n.ndim - 1)), o, n), new, old)


def train_all(config, setup: common.Setup, seeds: common.Seeds, mask_sets: list, *, max_epochs: int,
              rule: StopRule | None, probe: Callable | None = None, starts: list | None = None,
              keep_params: bool = False, keep_opt_state: bool = False) -> dict:
    """Train every seed's network under each of the C stacked mask sets: the C · seeds networks
    (:func:`jaxprune.experiments.common.networks`) are the units of one :func:`jaxprune.parallel.seed_map` call,
    trained in blocks until they converge (:func:`train_until_converged`). Network (c, i) starts from
    ``starts[c]`` where given and not None — stacked [seeds, ...] weights (masked before training, fresh optimizer
    state), or a pair (weights, optimizer states) to carry an optimizer state over — else from seed i's initial
    weights. ``probe(apply_fn, params, seed_data) -> {name: scalar}`` is recorded after every epoch.

    With ``config.data_per_seed`` network (c, i) trains on seed i's own dataset (``seeds.data``, one
    :class:`jaxprune.data.SeedData`), which ``probe`` gets as ``seed_data`` (None when the seeds share one).

    Returns host arrays [C, seeds, ...]: :func:`fit_summary`'s, ``epochs``, ``hit_cap`` (ran ``max_epochs``
    without its rule firing or failing), ``history`` (per-epoch), for MLPs ``lipschitz_spectral_bound``, with
    ``keep_params`` the final masked weights ``params`` and with ``keep_opt_state`` the optimizer states. A call of
    at least :data:`PROGRESS_MIN_NETWORKS` networks counts them into ``setup.blocks_done`` as they finish."""
    tx = train.optimizer_from_config(config, train.steps_per_epoch(setup.train_data.y.shape[0], config.batch_size))
    cells = len(mask_sets)
    nets, net_masks = common.networks(setup, seeds, mask_sets)
    nets, opt_states = with_starts(setup, seeds, nets, tx, [None] * cells if starts is None else starts)
    block = functools.partial(train_block, config, setup, tx, max_epochs=max_epochs, rule=rule, probe=probe,
                              keep_params=keep_params, keep_opt_state=keep_opt_state)
    progress = cells * config.num_seeds >= PROGRESS_MIN_NETWORKS
    key = ("train_all", config.to_json_best_effort(), max_epochs, rule, probe, keep_params, keep_opt_state, progress)
    program = setup.program(key, lambda: parallel.seed_map(block, setup.mesh, blockwise=True,  # once per run
                                                           on_block=setup.blocks_done if progress else None))
    out = program(nets.params, nets.batch_stats, net_masks, nets.order_keys, nets.data, opt_states)
    out = jax.tree.map(lambda a: np.asarray(a).reshape(cells, -1, *a.shape[1:]), parallel.to_host(out))
    if config.model in MLP_MODELS:
        out["lipschitz_spectral_bound"] = np.array([robustness.spectral_norm_product(
            jax.tree.map(lambda w: w[c], out["params"])) for c in np.ndindex(out["epochs"].shape)]
        ).reshape(out["epochs"].shape)
    if not keep_params:
        out.pop("params", None)
    return out


def with_starts(setup: common.Setup, seeds: common.Seeds, nets: common.Seeds, tx, starts: list) -> tuple:
    """(``nets`` (:func:`jaxprune.experiments.common.networks`) with network (c, i)'s weights from ``starts[c]``
    where it is not None, the optimizer states the networks start from or None for fresh ones): ``starts[c]`` is
    stacked [seeds, ...] weights, or a pair (weights, optimizer states); a network without one gets Adam's zeros."""
    joined = lambda trees: setup.shard(jax.tree.map(lambda *p: jnp.concatenate(p), *trees))  # noqa: E731
    if any(s is not None for s in starts):
        nets = nets._replace(params=joined([seeds.params if s is None else s[0] if isinstance(s, tuple) else s
                                            for s in starts]))
    opt_states = None
    if any(isinstance(s, tuple) for s in starts):
        fresh = jax.vmap(tx.init)(seeds.params)  # Adam's zeros: the same as init_state's
        opt_states = joined([s[1] if isinstance(s, tuple) else fresh for s in starts])
    return nets, opt_states


def train_block(config, setup: common.Setup, tx, params, batch_stats, masks_, keys, seed_data, opt_state, *,
                max_epochs: int, rule: StopRule | None, probe: Callable | None, keep_params: bool,
                keep_opt_state: bool) -> dict:
    """ONE block of :func:`train_all`'s networks (a leading block axis on every argument but ``opt_state`` None):
    masked weights and fresh (or the given) optimizer states trained until they converge
    (:func:`train_until_converged`), then each network's :func:`fit_summary`, ``epochs``, ``hit_cap`` and
    ``history``."""
    net_probe = probe and (lambda state, own_data: probe(train.apply_fn_for(setup.model, state.batch_stats),
                                                         state.params, own_data))
    states = jax.vmap(lambda p, bs, m: train.init_state(masks.apply(p, m), bs, tx))(params, batch_stats, masks_)
    states = states if opt_state is None else states.replace(opt_state=opt_state)
    fit = train_until_converged(states, masks_, common.train_data_of(setup, seed_data), keys, model=setup.model,
                                tx=tx, batch_size=config.batch_size, max_epochs=max_epochs, rule=rule,
                                probe=net_probe, eval_batch_size=config.eval_batch_size,
                                data_axis=None if seed_data is None else 0, probe_data=seed_data)
    hit_cap = ~fit.converged & (fit.states.failed_step < 0) if rule else jnp.zeros_like(fit.converged)
    keep = keep_params or config.model in MLP_MODELS
    summary = jax.vmap(functools.partial(fit_summary, config, setup, keep_params=keep,
                                         keep_opt_state=keep_opt_state),
                       in_axes=(0, 0, None if seed_data is None else 0))(fit.states, masks_, seed_data)
    return summary | {"epochs": fit.epochs, "hit_cap": hit_cap, "history": fit.history}


def fit_summary(config, setup: common.Setup, state: train.TrainState, mask, seed_data, *, keep_params: bool,
                keep_opt_state: bool) -> dict:
    """ONE trained network's fit of its training set (the seed's own, or the shared one): ``train_accuracy`` /
    ``train_loss`` (inference mode), ``fit_sq_error`` (mean squared error of the fit: ‖softmax(f(x_i)) − e_{y_i}‖²
    for labels, (f(x_i) − y_i)² for regression), ``fitted`` (per training example: prediction equals its label),
    for labels ``memorized`` (fraction of the training points with cross-entropy ≤ ``config.memorized_loss_max``,
    :func:`memorized_points`), ``failed_step`` (first step with a non-finite loss, −1 if none), ``nonzero``
    (‖m‖₀), ``lipschitz_input_gradient``, and the weights / optimizer state if asked."""
    data_ = common.train_data_of(setup, seed_data)
    final = train.evaluate(state.params, state.batch_stats, data_, model=setup.model, batch_size=config.eval_batch_size)
    apply_fn = train.apply_fn_for(setup.model, state.batch_stats)
    outputs = jax.lax.map(lambda x: apply_fn(state.params, x[None])[0], data_.x,
                          batch_size=min(config.eval_batch_size, data_.x.shape[0]))
    labels = jnp.issubdtype(data_.y.dtype, jnp.integer)
    if labels:
        probs = jax.nn.softmax(outputs)
        sq_error = jnp.sum(probs ** 2, -1) - 2 * jnp.take_along_axis(probs, data_.y[:, None], -1)[:, 0] + 1
        fitted = jnp.argmax(outputs, -1) == data_.y
    else:
        sq_error, fitted = (outputs[:, 0] - data_.y) ** 2, jnp.zeros(data_.y.shape, bool)
    memorized = ({"memorized": jnp.mean(memorized_points(outputs, data_.y, config.memorized_loss_max))}
                 if labels else {})
    out = {**memorized, "train_accuracy": final["accuracy"], "train_loss": final["loss"],
           "failed_step": state.failed_step, "fit_sq_error": jnp.mean(sq_error),
           "fitted": fitted, "nonzero": robustness.nonzero_parameters(mask),
           "lipschitz_input_gradient": jnp.max(robustness.input_jacobian_norms(apply_fn, state.params, data_.x))}
    return out | ({"params": state.params} if keep_params else {}) | (
        {"opt_state": state.opt_state} if keep_opt_state else {})


def methods() -> tuple[str, ...]:
    """Every method memorization builds masks with: :func:`jaxprune.experiments.masking.methods` and
    :data:`NO_REWIND`."""
    return masking.methods() + (NO_REWIND,)


def validate(config) -> None:
    """Memorization keys: :func:`validate_training`, classification with random labels (or ``label_noise``)."""
    validate_training(config)
    check_choice(config, "task", ("classification",))
    if config.keep_labels and (config.dataset == "gaussian" or config.label_noise > 0):
        raise ConfigError(f"config.keep_labels=True with dataset={config.dataset!r}, label_noise={config.label_noise}: "
                          "keep_labels keeps a real dataset's own labels (no label noise)")
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
    masking.check_rewire(config)
    if "swap" in config.ablations and config.get("keep_labels", False) and config.label_noise == 0:
        raise ConfigError(f"config.ablations={tuple(config.ablations)!r}: 'swap' draws the random labels again; with "
                          "config.keep_labels the training set keeps its own labels (none random)")
    validate_pruning(config)
    check_choice(config, "stop_rule", STOP_RULES)
    check_positive_int(config, "max_epochs")
    check_positive_int(config, "accuracy_patience", minimum=0)
    check_positive_int(config, "loss_window")
    check_positive_int(config, "min_epochs", minimum=0)
    check_choice(config, "memorization_metric", METRICS)
    check_choice(config, "no_rewind_optimizer", ("reset", "carry"))
    loss_max = config.memorized_loss_max
    if not (isinstance(loss_max, (int, float)) and not isinstance(loss_max, bool) and loss_max > 0):
        raise ConfigError(f"config.memorized_loss_max={loss_max!r}: must be a number > 0 (the paper: log(2)/10)")
    check_choice(config, "lr_schedule", ("constant",))  # training length is open-ended: no schedule horizon
    check_choice(config, "rewind_step", (0,))  # IMP here rewinds to the initialization
    for key in ("loss_tol", "accuracy_tol"):
        if not (isinstance(config[key], (int, float)) and config[key] >= 0):
            raise ConfigError(f"config.{key}={config[key]!r}: must be a number >= 0")


def random_label_dataset(config) -> data.Dataset:
    """``config.dataset`` with random training labels fixed by ``data_seed`` (module docstring): every label
    (``label_noise`` 0), or the ``label_noise`` fraction (recorded in ``corrupted``); with ``keep_labels`` a real
    dataset's own labels (e.g. Fig. 1b: noise on the inputs, ``input_noise_var``, the labels kept)."""
    dataset = data.load(config)
    if config.label_noise > 0 or config.dataset == "gaussian" or config.keep_labels:
        return dataset
    return with_label_noise(dataset, 1.0, config.data_seed)


def pretrain_dense(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, probe=None) -> dict:
    """Every seed's dense net trained from its initial weights under ``rule``: round 0 of IMP, the net that
    ``magnitude_after`` prunes, and the ``dense`` row. :func:`train_all`'s outputs [seeds, ...], with ``params``
    (and ``opt_state`` when ``magnitude_after_no_rewind`` carries it over)."""
    return cell(train_all(config, setup, seeds, [jax.vmap(masks.ones)(seeds.params)], max_epochs=config.max_epochs,
                          rule=rule, probe=probe, keep_params=True, keep_opt_state=carries_optimizer(config)), 0)


def carries_optimizer(config) -> bool:
    """Whether ``magnitude_after_no_rewind`` (in ``config.methods``) continues with the dense net's optimizer state
    (``no_rewind_optimizer='carry'``, Synaptic-Flow's singleshot, which saves the optimizer with the pre-trained model
    and reloads both before post-training) rather than a fresh one (``'reset'``)."""
    return NO_REWIND in config.methods and config.no_rewind_optimizer == "carry"


def fit_line(fit: dict, regression: bool) -> str:
    """'train loss …, accuracy …, epochs lo–hi, median m' of trained nets (no accuracy for regression: it has
    none)."""
    accuracy = "" if regression else f", accuracy {common.mean_std(fit['train_accuracy'])}"
    return f"train loss {common.mean_std(fit['train_loss'])}{accuracy}, epochs {common.range_median(fit['epochs'])}"


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
        log(f"imp round at density {density:.4f}: {fit_line(fit, setup.num_classes == 0)}")
    return rounds


def cell(out: dict, c: int) -> dict:
    """Mask set ``c``'s part of :func:`train_all`'s outputs (every leaf [C, seeds, ...] → [seeds, ...])."""
    return jax.tree.map(lambda a: a[c], out)


def comparison_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """The pairs (A, B) compared: every method against each of its controls (``+shuffle``, ``+swap``, ``+rewire``),
    rewinding against not, every after-training method against every at-initialization method (those present)."""
    present = list(dict.fromkeys(r["method"] for r in rows))
    after = [m for m in (*masking.AFTER_TRAINING, NO_REWIND) if m in present]
    pairs = [(m, f"{m}+{a}") for m in present for a in ABLATIONS if f"{m}+{a}" in present]
    pairs += [("magnitude_after", NO_REWIND)] if {"magnitude_after", NO_REWIND} <= set(present) else []
    return pairs + [(a, b) for a in after for b in AT_INIT if b in present]


def ordering(results: list[dict], metric: str = "train_accuracy") -> list[dict]:
    """Per sparsity: does every after-training method (imp, magnitude_after) memorize more (``metric``), in the mean
    over the seeds that did not fail, than every at-initialization method (snip, grasp, synflow, random) present?
    (No Free Prune's claim.)"""
    rows = []
    for s in sorted({r["sparsity"] for r in results if r["method"] != "dense"}):
        mean = {r["method"]: float(np.nanmean(r[metric])) for r in results if r["sparsity"] == s}
        after = [mean[m] for m in masking.AFTER_TRAINING if m in mean]
        init = [mean[m] for m in AT_INIT if m in mean]
        holds = bool(min(after) > max(init)) if after and init else None
        rows.append({"sparsity": s, "after_training_worst": min(after, default=None),
                     "at_init_best": max(init, default=None), "holds": holds})
    return rows


def found_masks(config, setup: common.Setup, seeds: common.Seeds, methods, rule: StopRule, log,
                probe=None) -> tuple:
    """The masks every method of ``methods`` finds on ``setup``'s training set at every ``config.sparsities``:
    ({method: {sparsity: stacked masks}}, the IMP rounds of :func:`imp_rounds` ({} without IMP), the dense
    pre-training of :func:`pretrain_dense` or None when no method needs a trained net). ``magnitude_after`` and
    :data:`NO_REWIND` share one set of largest-|θ_T| masks."""
    ones = jax.vmap(masks.ones)(seeds.params)
    dense = None
    if set(methods) & {*masking.AFTER_TRAINING, NO_REWIND}:
        with common.stage(log, "dense pre-training to convergence", config.num_seeds, "networks") as advance, \
                setup.blocks_done.to(advance):
            dense = pretrain_dense(config, setup, seeds, rule, probe)
        log(f"dense pre-training: {fit_line(dense, setup.num_classes == 0)}")
    found, rounds = {}, {}
    for method in methods:
        if method == "imp":
            rounds = imp_rounds(config, setup, seeds, dense, rule, log, probe)
            found[method] = {s: rounds.get(1.0 - s, (ones,))[0] for s in config.sparsities}  # sparsity 0: dense
        elif method in ("magnitude_after", NO_REWIND):
            shared = found.get("magnitude_after", found.get(NO_REWIND))
            prune = parallel.seed_map(lambda p, s: masks.largest_magnitude(p, s, config.scope), setup.mesh,
                                      in_axes=(0, None), one_device=True)
            found[method] = shared or {s: prune(dense["params"], jnp.float32(s)) for s in config.sparsities}
        else:
            found[method] = masking.method_masks(method, config, setup, seeds, config.sparsities, log)
        log(f"masks: {method}")
    return found, rounds, dense


def redrawn_dataset(config, dataset: data.Dataset) -> data.Dataset:
    """D′ of the swap control (:func:`jaxprune.data.noise.redrawn`): the regression noise, or the labels that are
    random in ``dataset`` (every label of gaussian ``labels='random'``, else the ``corrupted`` ones), drawn again."""
    random = dataset.corrupted | (config.dataset == "gaussian" and config.labels == "random")
    if dataset.num_classes > 0 and not random.any():
        raise ConfigError(f"config.ablations={tuple(config.ablations)!r}: 'swap' draws the random labels again, and "
                          f"this {config.dataset} training set keeps its own labels (none random)")
    return redrawn(dataset, config.data_seed, random)


def redrawn_seed_data(config, setup: common.Setup, seeds: common.Seeds) -> common.Seeds:
    """``seeds`` with every seed's own dataset (``config.data_per_seed``) replaced by its D′, a second draw with the
    same inputs, teacher and test set: the random labels y′ ~ Uniform{0..K−1}, or the noise z′ ~ N(0, noise_std²)
    (y′ = f*(x) + z′), drawn from fold_in(init_key_i, :data:`SWAP_STREAM`), apart from every key of D."""
    def one_seed(d, key):
        if d.noise is None:
            return d._replace(y_train=jax.random.randint(key, d.y_train.shape, 0, config.num_classes, d.y_train.dtype))
        clean = d.y_train - d.noise
        y = clean + config.noise_std * jax.random.normal(key, d.noise.shape, d.noise.dtype)
        return d._replace(y_train=y, noise=y - clean)

    keys = jax.vmap(lambda k: jax.random.fold_in(k, SWAP_STREAM))(seeds.init_keys)
    return seeds._replace(data=setup.shard(jax.vmap(one_seed)(seeds.data, keys)))


def control_masks(config, setup: common.Setup, seeds: common.Seeds, found: dict, rule: StopRule, log) -> tuple:
    """The masks of every ``config.ablations`` control of every method of ``found`` it applies to (all but random),
    ({(method, control): {sparsity: stacked masks}}, {(method, control): {sparsity: rewiring diagnostics}}):

    - ``shuffle``: each layer's mask permuted (:func:`jaxprune.experiments.masking.shuffled`);
    - ``swap``: the mask the method finds on D′ (:func:`redrawn_dataset`, or :func:`redrawn_seed_data` with
      ``config.data_per_seed``; same inputs, initial weights, keys and data order, only the random labels or the
      noise drawn again), by :func:`found_masks` on D′;
    - ``rewire``: each layer's mask rewired with every unit's in- and out-degree kept
      (:func:`jaxprune.experiments.masking.rewired`, ``config.rewire_swaps_per_edge``).
    """
    applies = lambda a: [m for m in found if pai_experiment.ablation_applies(a, m)]  # noqa: E731
    swapped = {}
    if "swap" in config.ablations and applies("swap"):
        swap_setup, swap_seeds = ((setup, redrawn_seed_data(config, setup, seeds)) if config.data_per_seed else
                                  (masking.swap_setup(setup, redrawn_dataset(config, setup.dataset)), seeds))
        swapped = found_masks(config, swap_setup, swap_seeds, applies("swap"), rule, lambda m: log(f"D′ {m}"))[0]
    controls, mixing = {}, {}
    for method in found:
        for ablation in filter(lambda a: pai_experiment.ablation_applies(a, method), config.ablations):
            if ablation == "shuffle":
                controls[method, ablation] = masking.shuffled(setup, seeds, found[method])
            elif ablation == "swap":
                controls[method, ablation] = swapped[method]
            else:
                controls[method, ablation], mixing[method, ablation] = masking.rewired(
                    setup, seeds, found[method], config.rewire_swaps_per_edge)
    return controls, mixing


def method_cells(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, log, probe=None) -> tuple:
    """(cells to train, trained cells, IMP rounds, dense pre-training, rewiring diagnostics): (method, sparsity,
    stacked masks, start weights or None) for every method of ``config.methods`` at every ``config.sparsities`` but
    IMP, each followed by its ``config.ablations`` controls (:func:`control_masks`; same start as the method);
    (method, sparsity, masks, outputs) for the nets trained already (``probe`` recorded): the dense net and IMP; the
    IMP rounds of :func:`imp_rounds` ({} without IMP); :func:`pretrain_dense`'s outputs, or None when no method
    needs a trained net (then the dense row is among the cells to train); {(row name, sparsity): the rewiring
    diagnostics of that ``+rewire`` row}."""
    ones = jax.vmap(masks.ones)(seeds.params)
    found, rounds, dense = found_masks(config, setup, seeds, config.methods, rule, log, probe)
    controls, mixing = control_masks(config, setup, seeds, found, rule, log)
    to_train, done = ([("dense", 0.0, ones, None)], []) if dense is None else ([], [("dense", 0.0, ones, dense)])
    for method, by_sparsity in found.items():
        start = None if method != NO_REWIND else (
            (dense["params"], dense["opt_state"]) if carries_optimizer(config) else dense["params"])
        if method == "imp":
            done += [("imp", s, mask, rounds.get(1.0 - s, (ones, dense))[1]) for s, mask in by_sparsity.items()]
        else:
            to_train += [(method, s, m, start) for s, m in by_sparsity.items()]
        to_train += [(f"{m}+{a}", s, masks_, start) for (m, a), by_s in controls.items() if m == method
                     for s, masks_ in by_s.items()]
    diagnostics = {(f"{m}+{a}", s): d for (m, a), by_s in mixing.items() for s, d in by_s.items()}
    return to_train, done, rounds, dense, diagnostics


def train_cells(config, setup: common.Setup, seeds: common.Seeds, rule: StopRule, log, probe=None) -> tuple:
    """Every net of :func:`method_cells` trained under ``rule`` (``probe`` recorded): ([(method, sparsity, stacked
    masks, :func:`train_all` outputs [seeds, ...])], the nets trained already first; IMP rounds; dense pre-training
    or None; rewiring diagnostics by (row name, sparsity)). The nets still to train train in one :func:`train_all`
    call."""
    to_train, done, rounds, dense, diagnostics = method_cells(config, setup, seeds, rule, log, probe)
    with common.stage(log, "training the masked networks to convergence (one compiled call)",
                      len(to_train) * config.num_seeds, "networks") as advance, setup.blocks_done.to(advance):
        out = train_all(config, setup, seeds, [m for _, _, m, _ in to_train], max_epochs=config.max_epochs,
                        rule=rule, probe=probe, starts=[start for *_, start in to_train]) if to_train else {}
    cells = done + [(m, s, stacked, cell(out, c)) for c, (m, s, stacked, _) in enumerate(to_train)]
    return cells, rounds, dense, diagnostics


def rows_by_method(results: list[dict]) -> dict[str, list[dict]]:
    """results.json rows grouped by method in their order, the ``dense`` reference left out (the figures' curves)."""
    grouped = {}
    for r in results:
        if r["method"] != "dense":
            grouped.setdefault(r["method"], []).append(r)
    return grouped


def result_row(method: str, sparsity: float, out: dict, report: dict, setup: common.Setup, sigma: float) -> dict:
    """One results.json row: per-seed fit (``memorized``, ``train_accuracy``, ``train_loss``), stopping, failures
    (:func:`with_failures`), mask densities, robustness and, with label noise, the fraction of the noisy labels
    fitted and of the clean ones."""
    n, d = common.data_size(setup)
    row = {"method": method, "sparsity": float(sparsity), "memorized": out["memorized"],
           "train_accuracy": out["train_accuracy"], "train_loss": out["train_loss"], "epochs": out["epochs"],
           "hit_cap": out["hit_cap"], **report}
    corrupted = np.zeros(n, bool) if setup.dataset is None else setup.dataset.corrupted
    if 0 < corrupted.sum() < n:
        row |= {"noisy_fitted": out["fitted"][:, corrupted].mean(1),
                "clean_fitted": out["fitted"][:, ~corrupted].mean(1)}
    return with_failures(row, out, FIT_METRICS) | robustness.summary(
        out["nonzero"], out["lipschitz_input_gradient"], out.get("lipschitz_spectral_bound"), sigma=sigma,
        num_examples=n, input_dim=d, fit_sq_error=out["fit_sq_error"])


FIT_METRICS = ("memorized", "train_accuracy", "train_loss", "noisy_fitted", "clean_fitted")


def with_failures(row: dict, out: dict, metrics) -> dict:
    """``row`` with ``failed_step`` (per seed: the first step whose loss was non-finite, −1 if none) and
    ``failed_seeds`` (the seeds with one), those seeds' ``metrics`` set to NaN: a failed net's weights were frozen
    before the bad step, so its fit says nothing about its capacity; it is left out of every mean and of every
    paired comparison (:func:`jaxprune.stats.comparisons`), as IRP does."""
    failed = np.asarray(out["failed_step"]) >= 0
    row = row | {"failed_step": out["failed_step"], "failed_seeds": np.flatnonzero(failed).tolist()}
    if failed.any():
        row |= {k: np.where(failed, np.nan, np.asarray(row[k], np.float64)) for k in metrics if k in row}
    return row


def run(config, workdir: str) -> dict:
    """The ``memorization`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("memorization")
    setup = common.setup(config, None if config.data_per_seed else random_label_dataset(config))
    seeds = common.init_seeds(setup)
    rule = StopRule.from_config(config)
    (n, d), dataset = common.data_size(setup), setup.dataset
    random_labels = "all" if dataset is None or not 0 < dataset.corrupted.sum() < n else dataset.corrupted.sum()
    log(f"{config.num_seeds} seeds, {len(config.methods)} methods x {len(config.sparsities)} sparsities, ablations "
        f"{tuple(config.ablations)}, {config.model} on {config.dataset} ({n} points, {setup.num_classes} "
        f"classes, {random_labels} labels random, {'own dataset per seed' if dataset is None else 'one dataset'}), "
        f"stop rule {config.stop_rule}")
    cells, rounds, dense, rewiring = train_cells(config, setup, seeds, rule, log)
    sigma = robustness.random_label_std(setup.num_classes)
    results = []
    for method, sparsity, stacked, fit in cells:
        report = masking.mask_report(setup, seeds, stacked, rewiring.get((method, sparsity)))
        results.append(result_row(method, sparsity, fit, report, setup, sigma))
        capped = f", {int(fit['hit_cap'].sum())} capped" if fit["hit_cap"].any() else ""
        failed = f", failed {common.named_seeds(results[-1]['failed_seeds'])}" if results[-1]["failed_seeds"] else ""
        log(f"{method:>28} sparsity {sparsity:.3f}: memorized {common.mean_std(results[-1]['memorized'])}, train "
            f"accuracy {common.mean_std(results[-1]['train_accuracy'])}, epochs {common.range_median(fit['epochs'])}"
            f"{capped}"
            f"{failed}")
    metric = config.memorization_metric
    comparisons = stats.comparisons(results, metric, comparison_pairs(results))
    summary = {"experiment": "memorization", "num_seeds": config.num_seeds, "num_examples": n,
               "input_dim": d, "num_classes": setup.num_classes, "data_per_seed": config.data_per_seed,
               "label_noise": config.label_noise, "label_std_sigma": sigma, "scope": config.scope,
               "synflow_rounds": config.synflow_rounds, "ablations": list(config.ablations),
               "stop_rule": rule._asdict() | {"max_epochs": config.max_epochs},
               "memorized_loss_max": config.memorized_loss_max, "metric": metric,
               "num_capped": int(sum(r["hit_cap"].sum() for r in results)),
               "num_failed": int(sum(len(r["failed_seeds"]) for r in results)),
               "num_networks": len(results) * config.num_seeds,
               "dense_at_pruning": None if dense is None else {
                   k: dense[k] for k in ("memorized", "train_accuracy", "train_loss", "epochs", "hit_cap")},
               "imp_rounds": [{"density": density, **{k: fit[k] for k in (
                   "memorized", "train_accuracy", "epochs", "hit_cap", "failed_step")}}
                   for density, (_, fit) in rounds.items()],
               "results": results, "comparisons": comparisons, "ordering": ordering(results, metric)}
    if parallel.is_primary():
        write_outputs(workdir, config, cells, results, comparisons, metric)
    holds = [f"{r['sparsity']:g}" for r in summary["ordering"] if r["holds"]]
    log(f"{summary['num_capped']} of {summary['num_networks']} networks hit max_epochs, {summary['num_failed']} "
        f"failed (non-finite loss); paper ordering (after-training > at-init, in the mean over seeds) "
        f"{'holds at sparsities ' + ', '.join(holds) if holds else 'holds at no sparsity'}; outputs in {workdir}")
    return summary


def write_outputs(workdir: str, config, cells: list, results: list[dict], comparisons: list[dict],
                  metric: str = "train_accuracy") -> None:
    """metrics.jsonl (per method, sparsity, seed, epoch run), the ``metric``-vs-density figure (capped networks
    marked x), No Free Prune's figure (``metric`` against sparsity, mean ± standard error over the seeds) and the
    paired-difference figure."""
    records = [{"method": m, "sparsity": s, "seed": i, "epoch": e + 1, "train_loss": fit["history"]["loss"][i, e],
                "train_accuracy": fit["history"]["accuracy"][i, e]}
               for m, s, _, fit in cells for i in range(config.num_seeds) for e in range(fit["epochs"][i])]
    with metrics.fresh(workdir, config.num_seeds) as writer:  # one compiled call trains them all: no earlier lines
        writer.append(records)
        writer.rows(results, ("memorized", "train_accuracy"))
    by_method = rows_by_method(results)
    values = lambda key: {m: np.stack([r[key] for r in rows], axis=1) for m, rows in by_method.items()}  # noqa: E731
    sparsities = {m: [r["sparsity"] for r in rows] for m, rows in by_method.items()}
    label = {"memorized": f"memorized fraction (cross-entropy ≤ {config.memorized_loss_max:.3g})",
             "train_accuracy": "memorized fraction (train accuracy)"}
    plotting.lines_vs_density(
        os.path.join(workdir, "memorization_vs_density.png"),
        {m: ([1.0 - s for s in sparsities[m]], v) for m, v in values(metric).items()}, ylabel=label[metric],
        title=f"Memorization, {config.model} on {config.dataset} (± sd; x: hit max_epochs)",
        flagged=values("hit_cap"))
    plotting.errorbars_vs_sparsity(
        os.path.join(workdir, "memorization_vs_sparsity.png"),
        {m: (sparsities[m], v) for m, v in values(metric).items()}, ylabel=label[metric],
        title=f"Memorization, {config.model} on {config.dataset} (mean ± standard error over "
              f"{config.num_seeds} seeds)")
    if comparisons:
        plotting.paired_differences(os.path.join(workdir, "paired_differences.png"), comparisons,
                                    title="Memorized fraction: paired differences over seeds (95% t interval)")
