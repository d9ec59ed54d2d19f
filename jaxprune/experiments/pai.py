"""Experiment ``pai``: masks from pruning at initialization against pruning after training, at equal sparsity.

For every method × sparsity, the masks of all seeds come from one vmapped call
(:func:`jaxprune.experiments.masking.method_masks`; every method starts from the same initial weights), the
masked networks are trained from those weights, all seeds vmapped, and evaluated on the train and test sets.
``imp`` (iterative magnitude pruning with rewinding) is the after-training reference; ``dense_reference`` adds
the unpruned network (method ``dense``, sparsity 0).

Sanity ablations of Frankle et al. 2021 ("Pruning neural networks at initialization: why are we missing the
mark?"), each adding rows ``'<method>+<ablation>'`` for every method except ``random`` (its own ablation):

- ``shuffle``: permute each prunable layer's mask at random — same per-layer counts, chosen weights forgotten;
- ``reinit``:  train the same mask from weights drawn with other keys (same data order) — the mask without the
  initial values it was chosen for;
- ``invert``:  keep the LOWEST scores (same scoring batches) — PaI methods only;

and the controls the memorization experiment shares (:mod:`jaxprune.experiments.masking`):

- ``rewire``:  rewire each prunable layer's mask keeping every unit's in- and out-degree
  (:func:`jaxprune.experiments.masking.rewired`, ``config.rewire_swaps_per_edge``; Dense kernels only), with the
  chains' mixing diagnostic in ``rewire_mixing``;
- ``swap``:    the mask the method finds on D′, the training set with its noisy labels drawn again (same inputs,
  clean labels, corrupted positions, initial weights, keys and data order), trained and tested on D. It needs
  ``label_noise`` > 0: the task's own labels are not a random draw that could be drawn again with the inputs kept,
  and a mask found on an independent sample of inputs would need a second training set (MNIST-1D's is used whole),
  so without label noise swap is refused.

A row whose mask leaves a prunable layer empty for some seed (layer collapse) lists it in ``collapsed_layers``
and a warning is printed. Writes ``metrics.jsonl`` (one line per row and seed, with the per-epoch training
curves), ``test_accuracy_vs_density.png``, ``train_accuracy_vs_density.png``; returns the ``results.json`` dict.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from jaxprune import masks, metrics, parallel, plotting, train
from jaxprune import workdir as wd
from jaxprune.config import check_methods, check_sparsities, validate_pruning
from jaxprune.data.noise import redrawn
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking
from jaxprune.experiments import irp as irp_experiment

ABLATIONS = ("shuffle", "reinit", "invert", "rewire", "swap")
REINIT_STREAM = 2  # re-initialized weights of seed i: init from fold_in(key_i, REINIT_STREAM)


def validate(config) -> None:
    """methods ⊆ masking.methods(), distinct sparsities in [0, 1), distinct ablations ⊆ ABLATIONS, pruning keys."""
    check_methods(config, masking.methods())
    check_sparsities(config)
    if config.ablations != ():
        check_methods(config, ABLATIONS, key="ablations")
    masking.check_rewire(config)
    if "swap" in config.ablations and not config.label_noise > 0:
        raise ConfigError(f"config.ablations={tuple(config.ablations)!r}: 'swap' draws the noisy labels again and "
                          f"needs config.label_noise > 0 (got {config.label_noise!r}); see jaxprune/experiments/pai.py")
    validate_pruning(config)


def ablation_applies(ablation: str, method: str) -> bool:
    """Every ablation applies to every method but random; inversion only to the scores at initialization."""
    return method != "random" and (ablation != "invert" or method not in masking.AFTER_TRAINING)


def reinitialized(setup: common.Setup, seeds: common.Seeds) -> common.Seeds:
    """``seeds`` with weights initialized from fold_in(key, REINIT_STREAM) instead; data-order keys unchanged."""
    keys = jax.vmap(lambda k: jax.random.fold_in(k, REINIT_STREAM))(setup.keys)
    fresh = common.init_seeds(dataclasses.replace(setup, keys=keys))
    return seeds._replace(params=fresh.params, batch_stats=fresh.batch_stats, init_keys=fresh.init_keys)


def ablated(ablation: str, method: str, config, setup: common.Setup, seeds: common.Seeds, stacked_masks: dict,
            checkpoint_dir: str | None = None) -> tuple[common.Seeds, dict, dict]:
    """(initial weights, {sparsity: stacked masks}, {sparsity: rewiring diagnostics} or {}) that ``ablation`` trains
    in place of (seeds, stacked_masks); the swap's IMP rounds on D′ checkpointed under ``checkpoint_dir``."""
    if ablation == "shuffle":
        return seeds, masking.shuffled(setup, seeds, stacked_masks), {}
    if ablation == "reinit":
        return reinitialized(setup, seeds), stacked_masks, {}
    if ablation == "rewire":
        return seeds, *masking.rewired(setup, seeds, stacked_masks, config.rewire_swaps_per_edge)
    if ablation == "swap":
        swap_setup = masking.swap_setup(setup, redrawn(setup.dataset, config.data_seed, setup.dataset.corrupted))
        return seeds, masking.method_masks(method, config, swap_setup, seeds, list(stacked_masks),
                                           checkpoint_dir=checkpoint_dir), {}
    return seeds, masking.method_masks(method, config, setup, seeds, list(stacked_masks), invert=True), {}


def evaluate_rows(method: str, config, setup: common.Setup, seeds: common.Seeds, stacked_masks: dict,
                  log: common.Progress, rewiring: dict | None = None) -> list[dict]:
    """Train every seed's masked network at every sparsity; one result row per sparsity (values per seed), with the
    rewiring diagnostics of ``rewiring`` {sparsity: ...} where given."""
    rows = []
    trained = masking.train_mask_sets(config, setup, seeds, list(stacked_masks.values()))
    for (sparsity, stacked), out in zip(stacked_masks.items(), trained):
        report = masking.mask_report(setup, seeds, stacked, (rewiring or {}).get(sparsity))
        rows.append({"method": method, "sparsity": float(sparsity), **report,
                     **{k: out[k] for k in ("test_accuracy", "train_accuracy", "test_loss", "train_loss")},
                     "failed_seeds": np.flatnonzero(out["failed_step"] >= 0).tolist(),
                     "epoch_loss": out["epoch_loss"], "epoch_accuracy": out["epoch_accuracy"]})
        for layer, bad in report["collapsed_layers"].items():
            log(f"WARNING: layer collapse: {method} at sparsity {sparsity:g}: {layer} is empty for "
                f"{common.named_seeds(bad)}")
        log(f"{method:>18} sparsity {sparsity:<6g} test acc {common.mean_std(out['test_accuracy'])}  "
            f"train acc {common.mean_std(out['train_accuracy'])}")
    return rows


def method_rows(method: str, config, setup: common.Setup, seeds: common.Seeds,
                log: common.Progress, checkpoint_dir: str | None = None) -> list[dict]:
    """The rows of ``method`` at every sparsity, then those of each ablation that applies to it (IMP's rounds
    checkpointed under ``checkpoint_dir``)."""
    stacked_masks = masking.method_masks(method, config, setup, seeds, config.sparsities, log,
                                         checkpoint_dir=checkpoint_dir)
    rows = evaluate_rows(method, config, setup, seeds, stacked_masks, log)
    for ablation in filter(lambda a: ablation_applies(a, method), config.ablations):
        swap_dir = checkpoint_dir and f"{checkpoint_dir}_swap"
        start, control, rewiring = ablated(ablation, method, config, setup, seeds, stacked_masks, swap_dir)
        rows += evaluate_rows(f"{method}+{ablation}", config, setup, start, control, log, rewiring)
    return rows


def metric_records(rows: list[dict]) -> list[dict]:
    """metrics.jsonl lines: one per (row, seed), with that seed's per-epoch training loss and accuracy."""
    keys = ("test_accuracy", "train_accuracy", "test_loss", "train_loss", "density", "epoch_loss", "epoch_accuracy")
    return [{"method": r["method"], "sparsity": r["sparsity"], "seed": s, **{k: r[k][s] for k in keys}}
            for r in rows for s in range(len(r["test_accuracy"]))]


def streamed(writer: metrics.MetricsWriter, rows: list[dict]) -> list[dict]:
    """``rows``, once their metrics.jsonl lines are appended and their accuracies written to TensorBoard."""
    writer.append(metric_records(rows))
    writer.rows(rows, ("test_accuracy", "train_accuracy"))
    return rows


def curves(rows: list[dict], metric: str) -> dict:
    """{label: (densities, values [seeds, n])} per method; the dense reference as a flat band across them."""
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    dense = by_method.pop("dense", None)
    out = {m: ([1.0 - r["sparsity"] for r in rs], np.stack([r[metric] for r in rs], axis=1))
           for m, rs in by_method.items()}
    if dense:
        lowest = min(min(d) for d, _ in out.values()) if out else 1.0
        out["dense"] = ([1.0, lowest], np.stack([dense[0][metric]] * 2, axis=1))
    return out


def summary_table(rows: list[dict]) -> list[str]:
    """One line per method: mean ± sd of the test accuracy at each sparsity."""
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(f"{r['sparsity']}: {common.mean_std(r['test_accuracy'])}")
    return [f"{m:>18}  " + "  ".join(cells) for m, cells in by_method.items()]


def run(config, workdir: str) -> dict:
    """The ``pai`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("pai")
    setup = common.setup(config)
    if "imp" in config.methods:
        irp_experiment.check_rewind_step(config, train.steps_per_epoch(len(setup.dataset.y_train), config.batch_size))
    seeds = common.init_seeds(setup)
    log(f"{config.num_seeds} seeds, methods {', '.join(config.methods)}, ablations {tuple(config.ablations)}, "
        f"sparsities {tuple(config.sparsities)}; {config.model} {tuple(config.widths)} on {config.dataset} "
        f"({len(setup.dataset.y_train)} train / {len(setup.dataset.y_test)} test), {config.epochs} epochs")
    rows, writer = [], metrics.fresh(workdir, config.num_seeds)
    if config.dense_reference:
        rows += streamed(writer, evaluate_rows("dense", config, setup, seeds,
                                               {0.0: jax.vmap(masks.ones)(seeds.params)}, log))
    for method in common.staged(log, "masks, then training, method by method", config.methods, "methods"):
        rows += streamed(writer, method_rows(method, config, setup, seeds, log,
                                             os.path.join(workdir, wd.CHECKPOINTS, method)))
    writer.close()
    results = {
        "experiment": "pai",
        "num_seeds": config.num_seeds,
        "methods": list(config.methods),
        "sparsities": list(config.sparsities),
        "ablations": list(config.ablations),
        "scope": config.scope,
        "allocation": config.allocation,
        "sparsity_target": config.sparsity_target,
        "pai_batches": config.pai_batches,
        "pai_batch_size": config.batch_size,
        "synflow_rounds": config.synflow_rounds,
        "grasp_temperature": config.grasp_temperature,
        "imp": {"prune_fraction": config.prune_fraction, "rewind_step": config.rewind_step},
        "results": [{k: v for k, v in r.items() if k not in ("epoch_loss", "epoch_accuracy")} for r in rows],
    }
    if parallel.is_primary():
        for metric in ("test_accuracy", "train_accuracy"):
            plotting.lines_vs_density(
                os.path.join(workdir, f"{metric}_vs_density.png"), curves(rows, metric),
                ylabel=metric.replace("_", " "),
                title=f"{config.model} on {config.dataset}: mean ± sd over {config.num_seeds} seeds")
    for line in ["test accuracy (mean ± sd over seeds) by sparsity:", *summary_table(rows), f"outputs in {workdir}"]:
        log(line)
    return results
