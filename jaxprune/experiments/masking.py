"""Masks of every pruning method for all seeds at once, and training of the masked networks.

Shared by the experiments that compare methods at equal sparsity (pai, memorization, noise correlation, MI,
AutoSparse). Every function takes the stacked per-seed initial weights (seed axis leading) and returns stacked
masks, so "the masks of one method for all seeds" is one call of a one-seed function lifted by
:func:`jaxprune.parallel.seed_map`.

Methods:
- at initialization (:mod:`jaxprune.pai`): ``random``, ``magnitude``, ``snip``, ``grasp``, ``synflow``; SNIP and
  GraSP score on ``config.pai_batches`` batches drawn from the training set with each seed's own key;
- after training: ``magnitude_after`` (train the dense net, keep the largest |θ_T|, rewind to θ_0) and ``imp``
  (iterative magnitude pruning with rewinding, :mod:`jaxprune.irp`, through every target sparsity);
- learned: ``autosparse`` (the scores of a trained :mod:`jaxprune.autosparse` predictor, passed as ``predictor``,
  an :class:`~jaxprune.autosparse.Pruner`; its gradient feature is taken on the same batches SNIP and GraSP score
  on, or on the whole training set).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import autosparse, connectivity, irp, masks, pai, parallel, train
from jaxprune.errors import ConfigError
from jaxprune.experiments import common
from jaxprune.experiments import irp as irp_experiment

SHUFFLE_STREAM = 3  # permutation keys of seed i: fold_in(fold_in(init_key_i, SHUFFLE_STREAM), sparsity index)
AFTER_TRAINING = ("imp", "magnitude_after")
LEARNED = ("autosparse",)


def methods() -> tuple[str, ...]:
    """The methods :func:`method_masks` builds without a predictor: the registered PaI scorers
    (:func:`jaxprune.pai.methods`, at the time of the call), then :data:`AFTER_TRAINING`."""
    return pai.methods() + AFTER_TRAINING


def scoring_batches(data: train.Data, key: jax.Array, num_batches: int, batch_size: int) -> tuple:
    """``num_batches`` disjoint random batches (x [B, batch, ...], y [B, batch]) drawn without replacement."""
    idx = jax.random.permutation(key, data.x.shape[0])[: num_batches * batch_size].reshape(num_batches, batch_size)
    return data.x[idx], data.y[idx]


def pai_mask(method: str, config, setup: common.Setup, params, batch_stats, key, sparsity, labels=None, *,
             invert: bool = False, predictor: autosparse.Pruner | None = None):
    """ONE seed's mask of a PaI method at ``sparsity``.

    ``key`` drives both the scoring batches (``config.pai_batches`` drawn from the training set, with ``labels`` in
    place of its labels if given) and the method's own randomness (random scores). ``invert=True`` keeps the lowest
    scores instead (``pai.prune``'s inversion ablation). ``method='autosparse'`` prunes with ``predictor``'s
    scores (:func:`jaxprune.autosparse.prune`, which the :class:`~jaxprune.autosparse.Pruner` configures: its
    allocation replaces ``config.scope``/``config.allocation``).
    """
    batch_key, score_key = jax.random.split(key)
    data = setup.train_data if labels is None else train.Data(setup.train_data.x, labels)
    batches = scoring_batches(data, batch_key, config.pai_batches, config.batch_size)
    apply_fn = train.apply_fn_for(setup.model, batch_stats)
    if method == "autosparse":
        return autosparse.prune(predictor, apply_fn, params, batches, sparsity, invert=invert,
                                train_data=(data.x, data.y))
    return pai.prune(method, apply_fn, params, batches, score_key, sparsity, scope=config.scope,
                     allocation=config.allocation, rounds=config.synflow_rounds if method == "synflow" else 1,
                     temperature=config.grasp_temperature, invert=invert)


def pai_masks(method: str, config, setup: common.Setup, params, batch_stats, keys, sparsities,
              invert: bool = False, predictor: autosparse.Pruner | None = None) -> dict:
    """{sparsity: stacked masks} of a PaI method (:func:`pai_mask`), one call over the seeds per sparsity;
    ``keys`` [num_seeds]."""
    one_seed = functools.partial(pai_mask, method, config, setup, invert=invert, predictor=predictor)
    prune_all = parallel.seed_map(one_seed, setup.mesh, in_axes=(0, 0, 0, None))
    return {s: prune_all(params, batch_stats, keys, jnp.float32(s)) for s in sparsities}


def shuffled(setup: common.Setup, seeds: common.Seeds, stacked_masks: dict) -> dict:
    """{sparsity: stacked masks} with every prunable layer's entries permuted (``masks.shuffle_within_layers``):
    the same layer densities, the positions forgotten."""
    shuffle = parallel.seed_map(lambda m, p, k, i: masks.shuffle_within_layers(
        m, p, jax.random.fold_in(jax.random.fold_in(k, SHUFFLE_STREAM), i)), setup.mesh, in_axes=(0, 0, 0, None),
        one_device=True)
    return {s: shuffle(m, seeds.params, seeds.init_keys, i) for i, (s, m) in enumerate(stacked_masks.items())}


def train_dense(config, setup: common.Setup, params, batch_stats, order_keys):
    """Train every seed's dense network for ``config.epochs``; returns the stacked final TrainStates."""
    spe = train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size)
    tx = train.optimizer_from_config(config, spe)

    def one_seed(p, bs, key):
        state = train.init_state(p, bs, tx)
        return train.train(state, masks.ones(p), setup.train_data, key, model=setup.model, tx=tx,
                           epochs=config.epochs, batch_size=config.batch_size)[0]

    return parallel.seed_map(one_seed, setup.mesh)(params, batch_stats, order_keys)


def magnitude_after_masks(config, setup: common.Setup, params, batch_stats, order_keys, sparsities) -> dict:
    """{sparsity: stacked masks} keeping the largest |θ_T| of the trained dense nets (one-shot, ``config.scope``)."""
    trained = train_dense(config, setup, params, batch_stats, order_keys).params
    prune_all = parallel.seed_map(lambda p, s: masks.largest_magnitude(p, s, config.scope), setup.mesh,
                                  in_axes=(0, None), one_device=True)
    return {s: prune_all(trained, jnp.float32(s)) for s in sparsities}


def imp_masks(config, setup: common.Setup, sparsities, log=None, checkpoint_dir: str | None = None) -> dict:
    """{sparsity: stacked masks} of iterative magnitude pruning with rewinding (``config.prune_fraction`` per
    round, ``config.rewind_step``), one IRP run passing through every target sparsity, checkpointed under
    ``checkpoint_dir`` if given (:func:`jaxprune.experiments.irp.run_rounds`)."""
    targets = [1.0 - s for s in sparsities]
    densities = irp.schedule(config.prune_fraction, targets=[t for t in targets if t < 1.0])
    labelled = log and (lambda message: log(f"imp: {message}"))
    _, _, out = irp_experiment.run_rounds(config, setup, densities, labelled, record=set(densities),
                                          checkpoint_dir=checkpoint_dir)
    dense = jax.vmap(masks.ones)(out["seeds"].params)
    return {s: out["masks"].get(1.0 - s, dense) for s in sparsities}


def method_masks(method: str, config, setup: common.Setup, seeds: common.Seeds, sparsities, log=None,
                 invert: bool = False, predictor: autosparse.Pruner | None = None,
                 checkpoint_dir: str | None = None) -> dict:
    """{sparsity: stacked masks} for any method in :func:`methods` or :data:`LEARNED`, from the seeds' initial
    weights; ``autosparse`` needs the trained ``predictor``. ``imp`` checkpoints its rounds under
    ``checkpoint_dir`` if given, so a rerun of a killed experiment resumes it.

    ``invert=True`` (PaI methods only) keeps the lowest scores, with the same scoring batches and keys.
    """
    params, batch_stats, init_keys, order_keys = seeds
    if invert and method in AFTER_TRAINING:
        raise ConfigError(f"invert: defined for the PaI methods {', '.join(pai.methods())}, not {method!r}")
    if method in LEARNED and predictor is None:
        raise ConfigError(f"method {method!r} needs a trained predictor (predictor=autosparse.Pruner(...))")
    if method == "imp":
        return imp_masks(config, setup, sparsities, log, checkpoint_dir)
    if method == "magnitude_after":
        return magnitude_after_masks(config, setup, params, batch_stats, order_keys, sparsities)
    method_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(init_keys)
    return pai_masks(method, config, setup, params, batch_stats, method_keys, sparsities, invert, predictor)


def mask_report(setup: common.Setup, seeds: common.Seeds, stacked_mask) -> dict:
    """Nominal and effective densities of every seed's mask (host values, one per seed):

    ``density`` and ``layer_density`` {layer: [seeds]} (kept / size), ``collapsed_layers`` {layer: [seeds whose
    layer kept no weight]}, and from :mod:`jaxprune.connectivity` (kept weights on an input→output path):
    ``effective_density``, ``effective_layer_density``, ``dead_layers`` {layer: [seeds whose layer keeps no
    weight on a path]} and ``disconnected`` [seeds whose output does not depend on the input at all]. Only the
    collapsed / dead layers are listed.
    """
    feature_shape = tuple(setup.train_data.x.shape[1:])
    diagnose = lambda p, bs, m: connectivity.diagnose(train.apply_fn_for(setup.model, bs), p, m, feature_shape)
    report = connectivity.report(parallel.to_host(parallel.seed_map(diagnose, setup.mesh, one_device=True)(
        seeds.params, seeds.batch_stats, stacked_mask)))
    layers = report["layers"]
    listed = lambda test: {k: np.flatnonzero(test(v)).tolist() for k, v in layers.items() if np.any(test(v))}
    return {"density": report["total"]["nominal_density"],
            "layer_density": {k: v["nominal_density"] for k, v in layers.items()},
            "collapsed_layers": listed(lambda v: np.asarray(v["kept"]) == 0),
            "effective_density": report["total"]["effective_density"],
            "effective_layer_density": {k: v["effective_density"] for k, v in layers.items()},
            "dead_layers": listed(lambda v: np.asarray(v["effective"]) == 0),
            "disconnected": np.flatnonzero(report["total"]["disconnected"]).tolist()}


def train_masked(config, setup: common.Setup, seeds: common.Seeds, stacked_masks) -> dict:
    """Train every seed's masked network from its (rewound) initial weights; evaluate on train and test.

    Returns host arrays per seed: ``test_accuracy``, ``train_accuracy`` (full training set, inference mode),
    ``test_loss``, ``train_loss``, ``failed_step`` (-1 if the loss stayed finite) and the per-epoch
    ``epoch_loss``/``epoch_accuracy`` [num_seeds, epochs].
    """
    spe = train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size)
    tx = train.optimizer_from_config(config, spe)

    def one_seed(p, bs, m, key):
        state = train.init_state(masks.apply(p, m), bs, tx)
        state, epochs, _ = train.train(state, m, setup.train_data, key, model=setup.model, tx=tx,
                                       epochs=config.epochs, batch_size=config.batch_size)
        evaluate = functools.partial(train.evaluate, state.params, state.batch_stats, model=setup.model,
                                     batch_size=config.eval_batch_size)
        test, fit = evaluate(setup.test_data), evaluate(setup.train_data)
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "train_accuracy": fit["accuracy"],
                "train_loss": fit["loss"], "failed_step": state.failed_step,
                "epoch_loss": epochs["loss"], "epoch_accuracy": epochs["accuracy"]}

    out = parallel.seed_map(one_seed, setup.mesh)(seeds.params, seeds.batch_stats, stacked_masks, seeds.order_keys)
    return jax.tree.map(np.asarray, parallel.to_host(out))


def train_mask_sets(config, setup: common.Setup, seeds: common.Seeds, mask_sets: list) -> list[dict]:
    """:func:`train_masked` of every seed under each stacked mask set, in ONE call over all those networks
    (:func:`jaxprune.experiments.common.networks`); one per-seed output dict per mask set."""
    out = train_masked(config, setup, *common.networks(setup, seeds, mask_sets))
    n = config.num_seeds
    return [jax.tree.map(lambda a: a[i * n:(i + 1) * n], out) for i in range(len(mask_sets))]
