"""Masks of every pruning method for all seeds at once, and training of the masked networks.

Shared by the experiments that compare methods at equal sparsity (pai, memorization, noise correlation, MI,
AutoSparse). Every function takes the stacked per-seed initial weights (seed axis leading) and returns stacked
masks, so "the masks of one method for all seeds" is one call of a one-seed function lifted by
:func:`jaxprune.parallel.seed_map`.

Methods:
- at initialization (:mod:`jaxprune.pai`): ``random``, ``magnitude``, ``snip``, ``grasp``, ``synflow``,
  ``iterative_snip``, ``force``, ``prospr``, ``npb`` and any registered scorer; the data-using ones score on
  ``config.pai_batches`` batches drawn from the training set with each seed's own key; with
  ``config.sparsity_target='effective'`` (also ``magnitude_after``) at effective sparsity (:func:`effective_search`);
- after training: ``magnitude_after`` (train the dense net, keep the largest |θ_T|, rewind to θ_0) and ``imp``
  (iterative magnitude pruning with rewinding, :mod:`jaxprune.irp`, through every target sparsity);
- learned: ``autosparse`` (the scores of a trained :mod:`jaxprune.autosparse` predictor, passed as ``predictor``,
  an :class:`~jaxprune.autosparse.Pruner`; its gradient feature is taken on the same batches SNIP and GraSP score
  on, or on the whole training set).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import autosparse, connectivity, data, irp, masks, models, pai, parallel, rewire, train
from jaxprune.errors import ConfigError
from jaxprune.experiments import common
from jaxprune.experiments import irp as irp_experiment

METHOD_STREAM = 1  # PaI method key of seed i: fold_in(init_key_i, METHOD_STREAM) (scoring batches, scorer key)
SHUFFLE_STREAM = 3  # permutation keys of seed i: fold_in(fold_in(init_key_i, SHUFFLE_STREAM), sparsity index)
REWIRE_STREAM = 4  # rewiring keys of seed i: fold_in(fold_in(init_key_i, REWIRE_STREAM), sparsity index)
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


def method_rounds(method: str, config) -> int | None:
    """Rounds of ``method`` from the config (``synflow_rounds``; ``iterative_rounds`` for iterative_snip and
    force); None = the method's registered count (:class:`jaxprune.pai.Method`)."""
    return {"synflow": config.synflow_rounds, "iterative_snip": config.iterative_rounds,
            "force": config.iterative_rounds}.get(method)


def scoring_options(config) -> pai.ScoringOptions:
    """The scorers' options from the config (GraSP's temperature, ProsPr's inner loop, NPB's alpha)."""
    return pai.ScoringOptions(temperature=config.grasp_temperature, inner_steps=config.prospr_steps,
                              inner_lr=config.prospr_lr, inner_momentum=config.prospr_momentum,
                              npb_alpha=config.npb_alpha)


def pai_mask(method: str, config, setup: common.Setup, params, batch_stats, key, sparsity, labels=None, *,
             invert: bool = False, predictor: autosparse.Pruner | None = None, seed_data=None):
    """ONE seed's mask of a PaI method at ``sparsity``.

    ``key`` drives both the scoring batches (``config.pai_batches`` drawn from the training set — the seed's own
    ``seed_data`` if given, else the shared one — with ``labels`` in place of its labels if given) and the method's
    own randomness (random scores). ``invert=True`` keeps the lowest
    scores instead (``pai.prune``'s inversion ablation). ``method='autosparse'`` prunes with ``predictor``'s
    scores (:func:`jaxprune.autosparse.prune`, which the :class:`~jaxprune.autosparse.Pruner` configures: its
    allocation replaces ``config.scope``/``config.allocation``).
    """
    batch_key, score_key = jax.random.split(key)
    data = common.train_data_of(setup, seed_data)
    data = data if labels is None else train.Data(data.x, labels)
    batches = scoring_batches(data, batch_key, config.pai_batches, config.batch_size)
    apply_fn = train.apply_fn_for(setup.model, batch_stats)
    if method == "autosparse":
        return autosparse.prune(predictor, apply_fn, params, batches, sparsity, invert=invert,
                                train_data=(data.x, data.y))
    return pai.prune(method, apply_fn, params, batches, score_key, sparsity, scope=config.scope,
                     allocation=config.allocation, rounds=method_rounds(method, config), schedule=config.pai_schedule,
                     options=scoring_options(config), invert=invert)


def pai_masks(method: str, config, setup: common.Setup, params, batch_stats, keys, sparsities,
              invert: bool = False, predictor: autosparse.Pruner | None = None, seed_data=None) -> dict:
    """{sparsity: stacked masks} of a PaI method (:func:`pai_mask`), one call over the seeds per sparsity;
    ``keys`` [num_seeds]; ``seed_data`` every seed's own dataset (``Seeds.data``) or None (shared)."""
    def one_seed(p, bs, key, own_data, sparsity):
        return pai_mask(method, config, setup, p, bs, key, sparsity, invert=invert, predictor=predictor,
                        seed_data=own_data)

    return at_sparsities(method, config, setup, one_seed, (params, batch_stats, keys, seed_data), params,
                         batch_stats, sparsities)


def at_sparsities(method: str, config, setup: common.Setup, mask_at, per_seed: tuple, params, batch_stats,
                  sparsities, one_device: bool = False) -> dict:
    """{sparsity: stacked masks} of the ONE-seed ``mask_at(*args, sparsity)``, ``args`` a seed's slice of the
    stacked ``per_seed``, lifted over the seeds (:func:`jaxprune.parallel.seed_map`). ``config.sparsity_target``
    'nominal': at each sparsity; 'effective': the :func:`effective_search` mask of each seed (``params`` and
    ``batch_stats``, the seeds' initial ones, give the connectivity), checked by :func:`reached`."""
    axes = (0,) * len(per_seed) + (None,)
    if config.sparsity_target == "nominal":
        lifted = parallel.seed_map(mask_at, setup.mesh, in_axes=axes, one_device=one_device)
        return {s: lifted(*per_seed, jnp.float32(s)) for s in sparsities}

    def search(p, bs, *args):
        *args, sparsity = args
        return effective_search(lambda s: mask_at(*args, s), effective_counter(setup, p, bs),
                                masks.count(masks.ones(p), p)[1], sparsity)

    lifted = parallel.seed_map(search, setup.mesh, in_axes=(0, 0, *axes), one_device=one_device)
    return {s: reached(method, s, lifted(params, batch_stats, *per_seed, jnp.float32(s))) for s in sparsities}


def effective_counter(setup: common.Setup, params, batch_stats):
    """mask ↦ its number of kept prunable weights on an input→output path (:mod:`jaxprune.connectivity`)."""
    apply_fn = train.apply_fn_for(setup.model, batch_stats)
    feature_shape = tuple(setup.train_data.x.shape[1:])
    return lambda m: masks.count(connectivity.effective_mask(apply_fn, params, m, feature_shape), params)[0]


def effective_search(mask_at, effective_count, total: int, sparsity) -> tuple:
    """ONE seed's mask at effective sparsity ``sparsity``, searched over the nominal sparsity (Vysogorets & Kempe
    2023): (mask_at(1 − k/n), k, its effective count e(k)) for the least nominal kept count k whose e(k) reaches
    t = round((1 − sparsity) · n), n = ``total`` the prunable weights; by bisection over k ∈ (t − 1, n] (e(k) ≤ k,
    and the dense mask is all effective), assuming e grows with k. :func:`reached` checks e(k) − t on the host."""
    target = jnp.round((1.0 - sparsity) * total).astype(jnp.int32)
    count = lambda k: effective_count(mask_at(1.0 - k / total))

    def halve(bounds):
        low, high = bounds
        mid = (low + high) // 2
        up = count(mid) >= target
        return jnp.where(up, low, mid), jnp.where(up, mid, high)

    kept = jax.lax.while_loop(lambda b: b[1] - b[0] > 1, halve, (target - 1, jnp.int32(total)))[1]
    mask = mask_at(1.0 - kept / total)
    return mask, kept, effective_count(mask)


def reached(method: str, sparsity: float, found: tuple):
    """The stacked masks of :func:`effective_search` 's output ``found`` (seeds stacked); ConfigError, naming
    the first seed, unless every seed's effective count is within one weight per prunable layer of the target."""
    stacked, kept, effective = parallel.to_host(found)
    layers = len(masks.prunable_leaves(stacked, stacked))
    total = sum(int(np.prod(np.shape(m)[1:])) for m in masks.prunable_leaves(stacked, stacked))
    target = round((1.0 - sparsity) * total)
    for seed, (k, e) in enumerate(zip(np.asarray(kept), np.asarray(effective))):
        if e - target > layers:
            raise ConfigError(
                f"config.sparsity_target='effective': {method} cannot reach effective sparsity {sparsity} for seed "
                f"{seed}: {target} effective weights asked, but its masks jump from fewer to {e} (with {k} kept) "
                f"as one more weight is kept, more than one per layer ({layers}): the weights it adds reconnect "
                f"a disconnected part of the network")
    return found[0]


def _shuffle_one_seed(mask, params, init_key, index):
    """One seed's :func:`jaxprune.masks.shuffle_within_layers` with key fold_in(fold_in(init_key, SHUFFLE_STREAM),
    index)."""
    return masks.shuffle_within_layers(mask, params, jax.random.fold_in(jax.random.fold_in(init_key, SHUFFLE_STREAM),
                                                                        index))


def shuffled(setup: common.Setup, seeds: common.Seeds, stacked_masks: dict) -> dict:
    """{sparsity: stacked masks} with every prunable layer's entries permuted (``masks.shuffle_within_layers``):
    the same layer densities, the positions forgotten. Compiled once per run (:meth:`common.Setup.program`)."""
    shuffle = setup.program("shuffle", lambda: parallel.seed_map(_shuffle_one_seed, setup.mesh,
                                                                  in_axes=(0, 0, 0, None), one_device=True))
    return {s: shuffle(m, seeds.params, seeds.init_keys, i) for i, (s, m) in enumerate(stacked_masks.items())}


def check_rewire(config) -> None:
    """With ``'rewire'`` in ``config.ablations``: a model whose kernels are all Dense (:data:`jaxprune.models.
    DENSE_ONLY`) and ``config.rewire_swaps_per_edge`` a number > 0; ConfigError naming the key otherwise."""
    if "rewire" not in config.ablations:
        return
    if config.model not in models.DENSE_ONLY:
        raise ConfigError(f"config.ablations={tuple(config.ablations)!r}: 'rewire' is defined for Dense kernels only "
                          f"(models {', '.join(models.DENSE_ONLY)}); config.model={config.model!r} has conv kernels")
    swaps = config.get("rewire_swaps_per_edge")
    if isinstance(swaps, bool) or not isinstance(swaps, (int, float)) or not swaps > 0:
        raise ConfigError(f"config.rewire_swaps_per_edge={swaps!r}: must be a number > 0")


def _rewire_one_seed(mask, params, init_key, index, lengths) -> tuple:
    """One seed's :func:`jaxprune.rewire.rewire_within_layers` with key fold_in(fold_in(init_key, REWIRE_STREAM),
    index)."""
    key = jax.random.fold_in(jax.random.fold_in(init_key, REWIRE_STREAM), index)
    return rewire.rewire_within_layers(mask, params, key, lengths)


def rewired(setup: common.Setup, seeds: common.Seeds, stacked_masks: dict, swaps_per_edge: float) -> tuple:
    """({sparsity: stacked masks} with every prunable layer rewired by :func:`jaxprune.rewire.rewire_within_layers`:
    every unit keeps its exact in- and out-degree, which edges it has is drawn uniformly; {sparsity: {layer:
    {``overlap`` [seeds, checkpoints], ``accepted`` [seeds]}}}, the chains' mixing diagnostics as host arrays).
    Each layer's chain attempts ``swaps_per_edge`` swaps per edge of the seed with the most (:func:`jaxprune.rewire.
    chain_lengths`). ConfigError if a prunable kernel is not 2-D. Compiled once per run (:meth:`common.Setup.
    program`; the chain lengths are arguments)."""
    lifted = setup.program("rewire", lambda: parallel.seed_map(_rewire_one_seed, setup.mesh,
                                                               in_axes=(0, 0, 0, None, None), one_device=True))
    one_params = jax.tree.map(lambda a: a[0], seeds.params)
    out = {s: lifted(m, seeds.params, seeds.init_keys, i, rewire.chain_lengths(m, one_params, swaps_per_edge))
           for i, (s, m) in enumerate(stacked_masks.items())}
    return {s: m for s, (m, _) in out.items()}, {s: parallel.to_host(d) for s, (_, d) in out.items()}


def swap_setup(setup: common.Setup, redrawn: data.Dataset) -> common.Setup:
    """``setup`` with its training set replaced by ``redrawn`` (D′ of the swap control: the same inputs, the random
    part of the targets drawn again, :func:`jaxprune.data.noise.redrawn`); model, keys, mesh and test set unchanged,
    so a method's mask found on it uses the same initial weights, keys and data order."""
    train_data = parallel.replicate(train.Data(redrawn.x_train, redrawn.y_train), setup.mesh)
    return dataclasses.replace(setup, dataset=redrawn, train_data=train_data)


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
    return at_sparsities("magnitude_after", config, setup, lambda p, s: masks.largest_magnitude(p, s, config.scope),
                         (trained,), params, batch_stats, sparsities, one_device=True)


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
    params, batch_stats, init_keys, order_keys = seeds.params, seeds.batch_stats, seeds.init_keys, seeds.order_keys
    if invert and method in AFTER_TRAINING:
        raise ConfigError(f"invert: defined for the PaI methods {', '.join(pai.methods())}, not {method!r}")
    if method in LEARNED and predictor is None:
        raise ConfigError(f"method {method!r} needs a trained predictor (predictor=autosparse.Pruner(...))")
    if method == "imp":
        return imp_masks(config, setup, sparsities, log, checkpoint_dir)
    if method == "magnitude_after":
        return magnitude_after_masks(config, setup, params, batch_stats, order_keys, sparsities)
    return pai_masks(method, config, setup, params, batch_stats, jax.vmap(method_key)(init_keys), sparsities,
                     invert, predictor, seeds.data)


def method_key(init_key: jax.Array) -> jax.Array:
    """A PaI method's key for the seed of initialization key ``init_key``: fold_in(init_key, METHOD_STREAM);
    :func:`pai_mask` splits it into (scoring-batch key, scorer key)."""
    return jax.random.fold_in(init_key, METHOD_STREAM)


def mask_report(setup: common.Setup, seeds: common.Seeds, stacked_mask, rewiring: dict | None = None) -> dict:
    """Nominal and effective densities of every seed's mask (host values, one per seed), and with ``rewiring`` (a
    mask of :func:`rewired`: its diagnostics at this sparsity) ``rewire_mixing`` {layer: {``overlap`` [seeds]
    [checkpoints], ``accepted`` [seeds]}}, the chains' mixing diagnostics (:mod:`jaxprune.rewire`):

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
            "disconnected": np.flatnonzero(report["total"]["disconnected"]).tolist()} | (
        {} if rewiring is None else {"rewire_mixing": jax.tree.map(lambda a: np.asarray(a).tolist(), rewiring)})


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
