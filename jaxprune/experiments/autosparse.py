"""Experiment ``autosparse``: learn pruning at initialization from iterative rewind pruning (Liu, Cheng et al. 2024).

1. Source IRP: ``rounds`` rounds of ``prune_fraction`` (:func:`jaxprune.irp.schedule`, ``irp_schedule`` geometric or
   linear; pruning by ``irp_criterion``, magnitude or SNIP on the trained weights) on ``model``/``dataset`` for
   every seed, run twice from the same initial weights with two data orders. ``ccc``: the mean over seeds of
   Lin's concordance correlation between the two runs' survival scores c / rounds.
2. Dataset: one row per prunable weight of every seed's first run (:func:`jaxprune.autosparse.build_dataset`,
   every feature and descriptor, depths in execution order, ∂L/∂θ on the seed's ``pai_batches`` scoring batches
   merged, or summed over the whole training set), written to ``autosparse_dataset.npz``; its ``source`` records
   the IRP config and the columns.
3. Predictors (``predictor`` 'mlp' | 'mlp_bn' | 'backbone' | 'image', ``predictor_objective`` mse | rank; ``gradient``
   'batch' or 'train_set', the reference's sum over the whole training set), one per feature set (``feature_set``
   and each of ``ablations``), trained on the rows of every seed but the last. ``prediction_spearman``: Spearman's
   ρ between predicted and true survival scores of the held-out last seed's weights.
4. Comparison on the target (``target_model``/``target_dataset``, "" = the source's), on HELD-OUT seeds
   (:func:`held_out`: initial weights and data orders from another ``fold_in`` stream, never seen by the predictor):
   masks of every method in ``methods`` and of ``autosparse`` (:func:`jaxprune.experiments.masking.method_masks`)
   at each sparsity from the same initializations, each seed trained from its initialization, all seeds vmapped;
   the ablation predictors prune and train there too. Every row carries the masks' nominal and effective
   (on an input→output path, :mod:`jaxprune.connectivity`) densities, overall and per layer, and the collapsed
   layers. ``comparisons``: paired differences of every AutoSparse method against every method of ``methods``
   with 95% t intervals over the shared seeds. ``transfer_targets`` ('model:dataset') repeat the comparison on
   other models/datasets with the same predictor (``transfer``, ``transfer_comparisons``).

Writes ``metrics.jsonl`` (source IRP per round/epoch/seed, then one line per trained network),
``autosparse_dataset.npz``, ``irp_survival.npz`` (flat survival counts of both runs, dataset row order),
``learning_tendencies.png`` (mean predicted and true score in quantile bins of |θ₀| and |∂L/∂θ|, held-out seed),
``accuracy_vs_sparsity.png`` and one ``accuracy_vs_sparsity_<model>_<dataset>.png`` per transfer target,
``comparisons.png`` (the paired differences on the target) and ``effective_density.png``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import autosparse, data, irp, masks, models, parallel, plotting, stats, train
from jaxprune import metrics as metrics_lib
from jaxprune import workdir as wd
from jaxprune.config import check_choice, check_methods, check_positive_int, check_sparsities, validate_pruning
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import irp as irp_experiment
from jaxprune.experiments import pai as pai_experiment

TENDENCY_BINS = 20
EVAL_STREAM = 4  # evaluation seed i: fold_in(key_i, EVAL_STREAM), never seen by the predictor (held_out)
PREDICTOR_STREAM = 2**32 - 1  # predictor key: fold_in(key(seed), PREDICTOR_STREAM), beyond every int32 seed id
REPORT_KEYS = ("density", "effective_density", "layer_density", "effective_layer_density", "collapsed_layers",
               "dead_layers", "disconnected")


def feature_label(feature_set) -> str:
    """'+'-joined feature names, e.g. 'param+grad' (the spelling of ``config.ablations`` entries)."""
    return "+".join(feature_set)


def parse_target(spec: str) -> tuple[str, str]:
    """'model:dataset' -> (model, dataset), or ConfigError naming the allowed values."""
    model, _, dataset = spec.partition(":")
    if model not in models.NAMES or dataset not in data.DATASETS:
        raise ConfigError(f"config.transfer_targets entry {spec!r}: must be 'model:dataset' with model in "
                          f"{', '.join(models.NAMES)} and dataset in {', '.join(data.DATASETS)}")
    return model, dataset


def validate(config) -> None:
    """Pruning keys, IRP keys, predictor keys, targets; at least two seeds (one is held out)."""
    validate_pruning(config)
    check_positive_int(config, "rounds")
    check_positive_int(config, "num_seeds", minimum=2)
    check_sparsities(config)
    check_methods(config, masking.methods())
    check_choice(config, "predictor", autosparse.KINDS)
    for key in ("predictor_steps", "predictor_batch_size", "predictor_window", "predictor_image_size",
                "predictor_image_width"):
        check_positive_int(config, key)
    hidden = tuple(config.predictor_hidden)
    if not hidden or not all(isinstance(w, int) and w >= 1 for w in hidden):
        raise ConfigError(f"config.predictor_hidden={hidden!r}: must be a non-empty tuple of positive integers")
    if not config.predictor_learning_rate > 0:
        raise ConfigError(f"config.predictor_learning_rate={config.predictor_learning_rate!r}: must be > 0")
    if not isinstance(config.descriptors, bool):
        raise ConfigError(f"config.descriptors={config.descriptors!r}: must be True or False")
    for key, labels in (("feature_set", [feature_label(config.feature_set)]), ("ablations", config.ablations)):
        for label in labels:
            if not is_feature_label(label):
                raise ConfigError(f"config.{key} entry {label!r}: must be a non-empty '+'-joined subset of "
                                  f"{', '.join(autosparse.FEATURES)} without repeats")
    check_choice(config, "target_model", ("",) + models.NAMES)
    check_choice(config, "target_dataset", ("",) + data.DATASETS)
    for spec in config.transfer_targets:
        parse_target(spec)
    check_choice(config, "irp_criterion", irp.CRITERIA)
    check_choice(config, "predictor_objective", autosparse.OBJECTIVES)
    check_choice(config, "gradient", autosparse.GRADIENTS)
    check_choice(config, "irp_schedule", irp.SCHEDULES)
    check_choice(config, "autosparse_allocation", autosparse.ALLOCATIONS)
    check_positive_int(config, "autosparse_iterations")
    for spec in config.variants:
        parse_variant(spec)


def main_options(config) -> dict:
    """The main AutoSparse method's options (``autosparse_allocation``, ``autosparse_iterations``,
    ``predictor_objective``)."""
    return {"allocation": config.autosparse_allocation, "iterations": config.autosparse_iterations,
            "objective": config.predictor_objective, "features": feature_label(config.feature_set)}


def is_feature_label(label: str) -> bool:
    """True if ``label`` is a '+'-joined non-empty subset of the features without repeats."""
    try:
        autosparse.num_features(tuple(label.split("+")))
    except ConfigError:
        return False
    return True


def parse_variant(spec: str) -> dict:
    """'key=value[,key=value]' (keys of :func:`main_options`) -> the options it overrides, or ConfigError."""
    out = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key == "allocation" and value in autosparse.ALLOCATIONS:
            out[key] = value
        elif key == "iterations" and value.isdigit() and int(value) >= 1:
            out[key] = int(value)
        elif key == "objective" and value in autosparse.OBJECTIVES:
            out[key] = value
        elif key == "features" and is_feature_label(value):
            out[key] = value
        else:
            raise ConfigError(f"config.variants entry {spec!r}: {item!r} must be allocation=<"
                              f"{'|'.join(autosparse.ALLOCATIONS)}>, iterations=<positive integer>, objective=<"
                              f"{'|'.join(autosparse.OBJECTIVES)}> or features=<'+'-joined subset of "
                              f"{', '.join(autosparse.FEATURES)}>, ','-joined")
    return out


def pruner(predictor: autosparse.PredictorState, allocation: autosparse.SurvivalAllocation,
           options: dict) -> autosparse.Pruner:
    """The :class:`~jaxprune.autosparse.Pruner` of ``predictor`` with ``options`` (:func:`main_options`)."""
    return autosparse.Pruner(predictor, allocation, options["allocation"], options["iterations"])


def source_depth(setup: common.Setup, seeds: common.Seeds) -> tuple[int, ...]:
    """Execution-order depth of the source model's prunable layers (:func:`jaxprune.autosparse.execution_order`)."""
    one = jax.tree.map(lambda a: a[0], (seeds.params, seeds.batch_stats))
    return autosparse.execution_order(train.apply_fn_for(setup.model, one[1]), one[0], setup.train_data.x[:1])


def for_target(config, model: str, dataset: str):
    """A copy of ``config`` that trains ``model`` on ``dataset``, its IMP pruning by magnitude (``irp_criterion``
    is the source IRP's)."""
    target = config.copy_and_resolve_references()
    target.model, target.dataset, target.irp_criterion = model, dataset, "magnitude"
    return target


def gradient_batch(config, setup: common.Setup, init_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch a seed's gradient feature is taken on: the ``pai_batches`` random batches its PaI methods score
    on (drawn with :func:`jaxprune.experiments.masking.method_key`'s batch key, not the initialization key),
    merged."""
    batch_key = jax.random.split(masking.method_key(init_key))[0]
    x, y = masking.scoring_batches(setup.train_data, batch_key, config.pai_batches, config.batch_size)
    return x.reshape(-1, *x.shape[2:]), y.reshape(-1)


def source_irp(config, setup: common.Setup, log,
               checkpoint_dir: str | None = None) -> tuple[common.Seeds, dict, list[dict], list[dict]]:
    """IRP of every seed twice, from the same weights with data orders ``order_key`` and ``fold_in(order_key, 1)``.

    The rounds are checkpointed under ``checkpoint_dir`` if given. Returns the seeds, the survival counts (pytrees
    with a leading seed axis, host) of the two runs under
    ``first``/``second``, the per-round metrics and the failed runs (``run`` index over the 2S runs).
    """
    seeds = common.init_seeds(setup)
    other_order = jax.vmap(lambda k: jax.random.fold_in(k, 1))(seeds.order_keys)
    replay = seeds._replace(order_keys=other_order)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tuple(seeds), tuple(replay))
    state, history, _ = irp_experiment.run_rounds(
        config, setup, irp.schedule(config.prune_fraction, config.rounds, kind=config.irp_schedule),
        lambda message: log(f"source IRP: {message}"),
        seeds=common.Seeds(*setup.shard(both)),
        checkpoint_dir=checkpoint_dir)
    state = parallel.to_host(state)
    n = config.num_seeds
    survival = {"first": jax.tree.map(lambda c: c[:n], state.survival),
                "second": jax.tree.map(lambda c: c[n:], state.survival)}
    failed = [{"run": f["seed"], "round": f["round"], "step": f["step"]} for f in irp_experiment.failed_seeds(state)]
    return seeds, survival, history, failed


def seed_rows(config, setup: common.Setup, seeds: common.Seeds, survival) -> autosparse.Dataset:
    """Every seed's dataset rows with all features and descriptors (arrays with a leading seed axis)."""

    def one_seed(params, batch_stats, key, counts):
        apply_fn = train.apply_fn_for(setup.model, batch_stats)
        batch = gradient_batch(config, setup, key)
        grads = (autosparse.train_set_gradients(apply_fn, params, (setup.train_data.x, setup.train_data.y))
                 if config.gradient == "train_set" else autosparse.init_gradients(apply_fn, params, batch))
        depth = autosparse.execution_order(apply_fn, params, batch[0])
        return autosparse.build_dataset(params, grads, counts, config.rounds, depth=depth,
                                        feature_set=autosparse.FEATURES,
                                        synflow=autosparse.path_scores(apply_fn, params, batch[0]))

    return parallel.seed_map(one_seed, setup.mesh)(seeds.params, seeds.batch_stats, seeds.init_keys, survival)


def flat_survival(survival, params) -> np.ndarray:
    """Survival counts [S, R] in dataset row order (prunable leaves in leaf order, each flattened)."""
    leaves = masks.prunable_leaves(survival, jax.tree.map(lambda p: p[0], params))
    return np.concatenate([np.asarray(c).reshape(c.shape[0], -1) for c in leaves], axis=1)


def predictor_key(seed: int) -> jax.Array:
    """The predictors' training key: fold_in(key(seed), :data:`PREDICTOR_STREAM`). Seed i of the sweep is
    fold_in(key(seed), i) with i an int32 ≥ 0 (:func:`jaxprune.experiments.common.seed_keys`), so no seed's key
    equals it (fold_in(key(seed), 1) did: seed 1's)."""
    return jax.random.fold_in(jax.random.key(seed), PREDICTOR_STREAM)


def within_layer_spearman(predicted: np.ndarray, rows: autosparse.Dataset) -> float:
    """Mean over prunable layers of Spearman's ρ between predicted and true survival within the layer (layers
    whose true survival is constant, where ρ is undefined, left out). The pooled ρ also counts the differences
    between layers, which the layer descriptors predict on their own; this one only the order inside a layer."""
    layer, y = np.asarray(rows["layer"]), np.asarray(rows["y"])
    values = [float(stats.spearman(predicted[layer == i], y[layer == i])) for i in np.unique(layer)
              if np.ptp(y[layer == i]) > 0]
    return float(np.mean(values)) if values else float("nan")


def fit_predictor(config, rows: autosparse.Dataset, feature_set: tuple[str, ...], key,
                  objective: str | None = None) -> autosparse.PredictorState:
    """A predictor on the columns of ``feature_set`` of the training ``rows`` (seed axis already merged), trained
    on ``objective`` (default ``config.predictor_objective``)."""
    return autosparse.train_predictor(
        autosparse.select_features(rows, feature_set, config.descriptors), key, kind=config.predictor,
        hidden=tuple(config.predictor_hidden), steps=config.predictor_steps, batch_size=config.predictor_batch_size,
        learning_rate=config.predictor_learning_rate, feature_set=feature_set, descriptors=config.descriptors,
        window=config.predictor_window, objective=objective or config.predictor_objective, gradient=config.gradient,
        image=(config.predictor_image_size, config.predictor_image_width))


def predict_rows(predictor: autosparse.PredictorState, rows: autosparse.Dataset) -> np.ndarray:
    """Predicted survival scores [R] of one network's rows (all features), predicted layer by layer as
    :func:`jaxprune.autosparse.score` does, so they are the scores AutoSparse would prune that network with."""
    x = autosparse.select_features(rows, predictor.feature_set, predictor.descriptors)["x"]
    layers = np.split(x, np.flatnonzero(np.diff(rows["layer"])) + 1)
    return np.concatenate([np.asarray(autosparse.predict(predictor, layer)) for layer in layers])


def accuracies(result: dict) -> np.ndarray:
    """Test accuracy per seed, NaN where the loss went non-finite."""
    return np.where(result["failed_step"] >= 0, np.nan, result["test_accuracy"])


def held_out(setup: common.Setup) -> common.Setup:
    """``setup`` with seed i's key replaced by fold_in(key_i, :data:`EVAL_STREAM`): initial weights and data orders
    the predictor never trained on (the source IRP runs from the keys themselves)."""
    return dataclasses.replace(setup, keys=jax.vmap(lambda k: jax.random.fold_in(k, EVAL_STREAM))(setup.keys))


def compare(config, setup: common.Setup, predictors: dict, log, checkpoint_dir: str | None = None) -> list[dict]:
    """Rows {method, sparsity, test_accuracy [per seed], train_accuracy, failed_seeds, **mask report} of
    ``config.methods`` and of every predictor in ``predictors`` (method name -> predictor state), all pruned at
    init from the seeds of ``setup`` (pass :func:`held_out` seeds) and trained there (IMP's rounds checkpointed
    under ``checkpoint_dir``). The mask report (:func:`jaxprune.experiments.masking.mask_report`) gives each
    seed's nominal and effective (on an input→output path) density, overall and per layer."""
    seeds = common.init_seeds(setup)
    sparsities = tuple(config.sparsities)
    labelled = {m: masking.method_masks(m, config, setup, seeds, sparsities, log, checkpoint_dir=checkpoint_dir)
                for m in config.methods}
    for label, predictor in predictors.items():
        labelled[label] = masking.method_masks("autosparse", config, setup, seeds, sparsities, predictor=predictor)
    keys = [(m, s) for m in labelled for s in sparsities]
    log(f"{config.model} on {config.dataset}: training {len(keys)} x {config.num_seeds} masked networks")
    results = masking.train_mask_sets(config, setup, seeds, [labelled[m][s] for m, s in keys])
    return [{"method": m, "sparsity": s, "test_accuracy": accuracies(r), "train_accuracy": r["train_accuracy"],
             "failed_seeds": np.flatnonzero(r["failed_step"] >= 0).tolist(),
             **masking.mask_report(setup, seeds, labelled[m][s])} for (m, s), r in zip(keys, results)]


def paired(config, rows: list[dict]) -> list[dict]:
    """Paired test-accuracy differences (95% t intervals over the shared seeds) of every AutoSparse method in
    ``rows`` against every method of ``config.methods`` (:func:`jaxprune.stats.comparisons`)."""
    learned = [m for m in dict.fromkeys(r["method"] for r in rows) if m.startswith("autosparse")]
    return stats.comparisons(rows, "test_accuracy", [(a, b) for a in learned for b in config.methods])


def binned_means(x: np.ndarray, ys: dict, bins: int) -> tuple[np.ndarray, dict]:
    """Centres (mean x) of ``bins`` equal-count bins of x and the mean of each ys[label] in every bin."""
    order = np.array_split(np.argsort(x), bins)
    return np.array([x[i].mean() for i in order]), {k: np.array([y[i].mean() for i in order]) for k, y in ys.items()}


def plot_tendencies(path: str, rows: autosparse.Dataset, predicted: dict) -> None:
    """Learned score vs |θ₀| and vs |∂L/∂θ| (the paper's learning tendencies), held-out seed, quantile bins."""
    fig, axes = plotting.figure(2)
    for ax, column, name in zip(axes[0], (0, 1), ("|θ₀|", "|∂L/∂θ| at θ₀")):
        centres, means = binned_means(np.abs(rows["x"][:, column]), {"IRP survival (truth)": rows["y"], **predicted},
                                      TENDENCY_BINS)
        for label, mean in means.items():
            ax.plot(centres, mean, marker="o", markersize=3, label=label, linestyle="--" if "truth" in label else "-")
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (mean of a quantile bin)")
        ax.set_ylabel("survival score")
        ax.grid(alpha=0.3)
    plotting.legend_outside(fig, axes[0][:1])
    fig.suptitle("Learning tendencies: predicted vs true survival score (held-out seed)")
    plotting.save(fig, path)


def plot_accuracy(path: str, rows: list[dict], title: str) -> None:
    """Test accuracy against density 1 - sparsity, one band per method."""
    plotting.lines_vs_density(path, pai_experiment.curves(rows, "test_accuracy"), ylabel="test accuracy", title=title)


def records(table: str, rows: list[dict], **extra) -> list[dict]:
    """metrics.jsonl lines, one per trained network."""
    return [{"table": table, **extra, "method": r["method"], "sparsity": r["sparsity"], "seed": s,
             **{k: r[k][s] for k in ("test_accuracy", "train_accuracy", "density", "effective_density")}}
            for r in rows for s in range(len(r["test_accuracy"]))]


def summary(rows: list[dict]) -> str:
    """One log line per method: mean ± sd test accuracy at each sparsity."""
    return "\n".join(f"  {r['method']:>22} @ {r['sparsity']:g}: {common.mean_std(r['test_accuracy'])}" for r in rows)


def dataset_source(config, rows: autosparse.Dataset, layer_names: list[str]) -> dict:
    """The ``source`` record of the dataset file: where the rows come from and what their columns are."""
    keys = ("model", "dataset", "widths", "data_seed", "num_examples", "label_noise", "seed", "num_seeds", "rounds",
            "prune_fraction", "irp_criterion", "irp_schedule", "rewind_step", "scope", "epochs", "batch_size",
            "optimizer", "learning_rate")
    return {**{k: config[k] for k in keys}, "rows_per_seed": int(rows["y"].shape[1]),
            "row_order": "seed, then prunable layer (leaf order, names in layer_names), then flat index",
            "feature_columns": autosparse.FEATURES + autosparse.DESCRIPTORS, "layer_names": layer_names,
            "gradient": (f"sum over the whole training set in batches of {autosparse.TRAIN_SET_BATCH} of d mean "
                         "cross-entropy / d theta at init (eval mode)" if config.gradient == "train_set" else
                         f"d mean cross-entropy / d theta at init on {config.pai_batches} x {config.batch_size} "
                         "training examples"), "target": "survival count / rounds"}


class Source(NamedTuple):
    """Steps 1–2 of the module docstring: the source IRP and the rows the predictors learn from (host arrays)."""

    seeds: common.Seeds  # the source seeds (initial weights)
    survival: dict  # 'first'/'second': survival counts of the two data orders, pytrees [seeds, ...]
    history: list  # the source IRP's per-round metrics
    failed: list  # its failed runs (:func:`source_irp`)
    rows: autosparse.Dataset  # every seed's dataset rows, a leading seed axis
    counts: dict  # 'first'/'second': flat survival counts [seeds, rows] (:func:`flat_survival`)
    ccc: list  # per seed: Lin's CCC between the two runs' survival scores c / rounds


def source_stage(config, setup: common.Setup, log, checkpoint_dir: str) -> Source:
    """The source IRP of every seed under both data orders (:func:`source_irp`, rounds checkpointed under
    ``checkpoint_dir``), its dataset rows and the concordance of the two runs' survival scores."""
    log(f"source IRP: {config.model} on {config.dataset}, {config.num_seeds} seeds x 2 data orders x "
        f"{config.rounds} rounds of {config.epochs} epochs")
    seeds, survival, history, failed = source_irp(config, setup, log, checkpoint_dir)
    rows = jax.tree.map(np.asarray, seed_rows(config, setup, seeds, survival["first"]))
    counts = {run: flat_survival(c, seeds.params) for run, c in survival.items()}
    ccc = [float(stats.ccc(a / config.rounds, b / config.rounds)) for a, b in zip(counts["first"], counts["second"])]
    return Source(seeds, survival, history, failed, rows, counts, ccc)


class Learned(NamedTuple):
    """Step 3: one predictor per feature set, trained on every seed's rows but the last, and its predictions of the
    held-out last seed's survival scores."""

    labels: list  # feature-set labels: ``config.feature_set``'s, then each of ``config.ablations``
    method_of: dict  # label -> method name ('autosparse' or 'autosparse:<label>')
    training_rows: autosparse.Dataset  # rows of seeds 0 … S−2, seed axis merged
    held_rows: autosparse.Dataset  # rows of seed S−1
    predictors: dict  # label -> PredictorState
    predicted: dict  # label -> predicted survival scores of ``held_rows``
    spearman: dict  # label -> Spearman's ρ(predicted, true) over ``held_rows``
    within: dict  # label -> mean within-layer ρ (:func:`within_layer_spearman`)


def learn_predictors(config, source: Source, log) -> Learned:
    """Train the predictor of every feature set (:func:`fit_predictor`) and score it on the held-out seed."""
    held = config.num_seeds - 1
    training_rows = jax.tree.map(lambda a: a[:held].reshape(-1, *a.shape[2:]), source.rows)
    held_rows = jax.tree.map(lambda a: a[held], source.rows)
    main_label = feature_label(config.feature_set)
    labels = list(dict.fromkeys([main_label, *config.ablations]))
    method_of = {label: "autosparse" if label == main_label else f"autosparse:{label}" for label in labels}
    log(f"survival CCC between data orders {np.mean(source.ccc):.4f}; training {len(labels)} {config.predictor} "
        f"predictors ({', '.join(labels)}) on {training_rows['y'].shape[0]} rows of {held} seeds")
    key = predictor_key(config.seed)
    predictors = {label: fit_predictor(config, training_rows, tuple(label.split("+")), key) for label in labels}
    predicted = {label: predict_rows(p, held_rows) for label, p in predictors.items()}
    spearman = {label: float(stats.spearman(p, held_rows["y"])) for label, p in predicted.items()}
    within = {label: within_layer_spearman(p, held_rows) for label, p in predicted.items()}
    log("held-out seed, Spearman(predicted, true survival) pooled / mean within layer: "
        + ", ".join(f"{label} {spearman[label]:.4f} / {within[label]:.4f}" for label in labels))
    return Learned(labels, method_of, training_rows, held_rows, predictors, predicted, spearman, within)


def build_pruners(config, setup: common.Setup, source: Source, learned: Learned, variants: dict) -> dict:
    """{method name: Pruner}: every learned predictor with the main options (:func:`main_options`), and every
    variant ('autosparse[<spec>]' -> options) with the predictor of its features and objective (trained here if
    no feature set's predictor has them), all allocating by the source IRP's survival counts."""
    allocation = autosparse.survival_allocation(
        masks.prunable_leaves(source.survival["first"], jax.tree.map(lambda p: p[0], source.seeds.params)),
        config.rounds, source_depth(setup, source.seeds))
    pruners = {learned.method_of[label]: pruner(learned.predictors[label], allocation, main_options(config))
               for label in learned.labels}
    kinds = dict.fromkeys((o["features"], o["objective"]) for o in variants.values())
    fitted = {(label, config.predictor_objective): p for label, p in learned.predictors.items()}
    fitted |= {k: fit_predictor(config, learned.training_rows, tuple(k[0].split("+")), predictor_key(config.seed),
                                k[1]) for k in kinds if k not in fitted}
    return pruners | {name: pruner(fitted[o["features"], o["objective"]], allocation, o)
                      for name, o in variants.items()}


def compare_targets(config, setups: dict, target: tuple, pruners: dict, variants: dict, log,
                    checkpoints: str) -> dict:
    """{(model, dataset): :func:`compare` rows} for the target (every pruner) and each transfer target
    ('autosparse' and the variants), on held-out seeds; IMP's rounds checkpointed under ``checkpoints``."""
    tables = {}
    for (model, dataset), setup in common.staged(log, "masks and training per target", setups.items(), "targets"):
        chosen = [*pruners] if (model, dataset) == target else ["autosparse", *variants]
        tables[(model, dataset)] = compare(for_target(config, model, dataset), setup,
                                           {name: pruners[name] for name in chosen}, log,
                                           os.path.join(checkpoints, f"imp_{model}_{dataset}"))
        log(f"{model} on {dataset}, test accuracy (mean ± sd over seeds):\n{summary(tables[(model, dataset)])}")
    return tables


class Tables(NamedTuple):
    """Step 4's rows as reported: the target's, the ablation predictors', the transfer targets'."""

    main: list  # target rows of ``config.methods``, 'autosparse' and the variants
    ablation: list  # per ablation label and sparsity: its predictor's row and prediction quality
    transfer: list  # the main methods' rows on each transfer target
    comparisons: list  # :func:`paired` on ``main``
    transfer_comparisons: list  # :func:`paired` on each transfer target's rows of the main methods


def report_tables(config, target: tuple, transfers: list, learned: Learned, tables: dict, variants: dict) -> Tables:
    """Select the reported rows of ``tables`` (:func:`compare_targets`) and pair them on the target."""
    compared = (*config.methods, "autosparse", *variants)
    by_method = {(r["method"], r["sparsity"]): r for r in tables[target]}
    main_rows = [r for r in tables[target] if r["method"] in compared]
    ablation = [{"features": label, "prediction_spearman": learned.spearman[label],
                 "prediction_spearman_within_layer": learned.within[label],
                 **by_method[(learned.method_of[label], s)]}
                for label in config.ablations for s in config.sparsities]
    transfer = [{"target_model": m, "target_dataset": d, **r}
                for m, d in transfers for r in tables[(m, d)] if r["method"] in compared]
    transfer_comparisons = [{"target_model": m, "target_dataset": d, **c} for m, d in transfers
                            for c in paired(config, [r for r in tables[(m, d)] if r["method"] in compared])]
    return Tables(main_rows, ablation, transfer, paired(config, main_rows), transfer_comparisons)


def results_of(config, target: tuple, source: Source, learned: Learned, reported: Tables) -> dict:
    """The ``results.json`` record of the run."""
    main_label = learned.labels[0]
    row_keys = ("method", "sparsity", "test_accuracy", "failed_seeds", *REPORT_KEYS)
    return {
        "experiment": "autosparse",
        "source": {"model": config.model, "dataset": config.dataset},
        "target": {"model": target[0], "dataset": target[1]},
        "evaluation": f"held-out seeds: seed i's initial weights and data order from fold_in(key_i, {EVAL_STREAM}), "
                      "never seen by the predictor (its rows come from the source IRP of key_i)",
        "ccc": float(np.mean(source.ccc)),
        "ccc_per_seed": source.ccc,
        "prediction_spearman": learned.spearman[main_label],
        "prediction_spearman_within_layer": learned.within[main_label],
        "results": [{k: r[k] for k in row_keys} for r in reported.main],
        "comparisons": reported.comparisons,
        "ablation": [{"features": r["features"], "prediction_spearman": r["prediction_spearman"],
                      "prediction_spearman_within_layer": r["prediction_spearman_within_layer"],
                      **{k: r[k] for k in row_keys if k != "method"}} for r in reported.ablation],
        "transfer": [{"target_model": r["target_model"], "target_dataset": r["target_dataset"],
                      **{k: r[k] for k in row_keys}} for r in reported.transfer],
        "transfer_comparisons": reported.transfer_comparisons,
        "source_irp_failed": source.failed,
    }


def write_metrics(config, workdir: str, target: tuple, transfers: list, source: Source, reported: Tables) -> None:
    """``metrics.jsonl``: the source IRP per round/epoch/seed, then one line per trained network."""
    metrics = [{"table": "source_irp", **m} for m in irp_experiment.metric_records(source.history)]
    metrics += records("results", reported.main, model=target[0], dataset=target[1])
    metrics += records("ablation", reported.ablation, model=target[0], dataset=target[1])
    for m, d in transfers:
        metrics += records("transfer", [r for r in reported.transfer
                                        if (r["target_model"], r["target_dataset"]) == (m, d)], model=m, dataset=d)
    with metrics_lib.fresh(workdir, len(reported.main[0]["test_accuracy"]) if reported.main else 1) as writer:
        writer.append(metrics)
        writer.rows(reported.main, ("test_accuracy",))


def write_outputs(config, workdir: str, target: tuple, transfers: list, source: Source, learned: Learned,
                  tables: dict, reported: Tables) -> None:
    """The dataset and survival files, ``metrics.jsonl`` and the figures (module docstring)."""
    layer_names = masks.prunable_names(jax.tree.map(lambda p: p[0], source.seeds.params))
    merged = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), source.rows)
    autosparse.save_dataset(os.path.join(workdir, "autosparse_dataset.npz"), merged,
                            dataset_source(config, source.rows, layer_names))
    wd.save_npz(os.path.join(workdir, "irp_survival.npz"), source.counts)
    write_metrics(config, workdir, target, transfers, source, reported)
    plot_tendencies(os.path.join(workdir, "learning_tendencies.png"), learned.held_rows,
                    {f"predicted ({label})": p for label, p in learned.predicted.items()})
    plot_accuracy(os.path.join(workdir, "accuracy_vs_sparsity.png"), reported.main,
                  f"{target[0]} on {target[1]}: AutoSparse (from {config.model}/{config.dataset}), PaI, IMP")
    plotting.paired_difference_grid(os.path.join(workdir, "comparisons.png"), reported.comparisons,
                                    title=f"{target[0]} on {target[1]}, held-out seeds: AutoSparse − each method")
    plotting.lines_vs_density(os.path.join(workdir, "effective_density.png"),
                              pai_experiment.curves(reported.main, "effective_density"),
                              ylabel="effective density (kept weights on an input→output path)",
                              title=f"{target[0]} on {target[1]}: nominal vs effective density")
    for m, d in transfers:
        plot_accuracy(os.path.join(workdir, f"accuracy_vs_sparsity_{m}_{d}.png"), tables[(m, d)],
                      f"Transfer: {m} on {d} (AutoSparse from {config.model}/{config.dataset})")


def run(config, workdir: str) -> dict:
    """The ``autosparse`` experiment end to end (module docstring); returns the results for ``results.json``."""
    log = common.Progress("autosparse")
    target = (config.target_model or config.model, config.target_dataset or config.dataset)
    transfers = list(dict.fromkeys(parse_target(spec) for spec in config.transfer_targets))
    source_setup = common.setup(config)  # every dataset is loaded (and checked) before any work
    setups = {t: held_out(common.setup(for_target(config, *t))) for t in dict.fromkeys([target] + transfers)}
    checkpoints = os.path.join(workdir, wd.CHECKPOINTS)
    source = source_stage(config, source_setup, log, os.path.join(checkpoints, "irp"))
    variants = {f"autosparse[{spec}]": {**main_options(config), **parse_variant(spec)} for spec in config.variants}
    learned = learn_predictors(config, source, log)
    pruners = build_pruners(config, source_setup, source, learned, variants)
    tables = compare_targets(config, setups, target, pruners, variants, log, checkpoints)
    reported = report_tables(config, target, transfers, learned, tables, variants)
    results = results_of(config, target, source, learned, reported)
    if parallel.is_primary():
        write_outputs(config, workdir, target, transfers, source, learned, tables, reported)
    log(f"done; outputs in {workdir}")
    return results
