"""Experiment ``irp``: iterative rewind pruning for all seeds at once, and the survival count of every weight.

Every round is the per-seed :func:`jaxprune.irp.round_step`, in pieces (so that it can be checkpointed mid-round),
each one jitted call vmapped over the seed axis.
Writes ``metrics.jsonl`` (per round and per epoch, per seed), ``survival.npz`` (per prunable parameter,
'/'-joined path → int array [num_seeds, *shape]), ``results.json`` and two figures.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import checkpoint, irp, masks, parallel, parameter_overview, plotting, stats, train
from jaxprune import metrics as metrics_lib
from jaxprune import workdir as wd
from jaxprune.config import check_choice, check_fraction, check_positive_int
from jaxprune.errors import AllSeedsFailed, ConfigError
from jaxprune.experiments import common


def validate(config) -> None:
    """IRP keys: rounds ≥ 1, prune_fraction in (0, 1), rewind_step ≥ 0, scope global/layerwise."""
    check_positive_int(config, "rounds")
    check_fraction(config, "prune_fraction")
    if config.prune_fraction == 0:
        raise ConfigError("config.prune_fraction=0: must be in (0, 1), the fraction of survivors pruned per round")
    check_positive_int(config, "rewind_step", minimum=0)
    check_choice(config, "scope", masks.SCOPES)


def check_rewind_step(config, steps_per_epoch: int) -> None:
    """The rewind point must be reached during round 0's training."""
    total = config.epochs * steps_per_epoch
    if config.rewind_step >= total:
        raise ConfigError(
            f"config.rewind_step={config.rewind_step}: must be < the {total} steps of one round "
            f"({config.epochs} epochs x {steps_per_epoch} steps)"
        )


class RoundPrograms:
    """The compiled pieces of an IRP round for all seeds: :func:`jaxprune.parallel.seed_map` of
    :func:`jaxprune.irp.round_begin`,
    :func:`~jaxprune.irp.round_train` (one program per segment length and capture) and
    :func:`~jaxprune.irp.round_end`; data, first step and next density are shared by the seeds."""

    def __init__(self, config, setup: common.Setup, tx, steps_per_epoch: int):
        self.config, self.setup, self.tx, self.steps_per_epoch = config, setup, tx, steps_per_epoch
        self.num_steps = config.epochs * steps_per_epoch
        self.init = parallel.seed_map(irp.init, setup.mesh, one_device=True)
        self.begin = parallel.seed_map(functools.partial(irp.round_begin, tx=tx, num_steps=self.num_steps), setup.mesh,
                                       one_device=True)
        self.criterion = config.get("irp_criterion", "magnitude")
        options = {} if self.criterion == "magnitude" else {  # SNIP: pai_batches x batch_size training examples
            "criterion": self.criterion, "criterion_examples": config.pai_batches * config.batch_size}
        self._end = parallel.seed_map(
            functools.partial(irp.round_end, model=setup.model, steps_per_epoch=steps_per_epoch, scope=config.scope,
                              **options), setup.mesh, in_axes=(0, 0) + (None,) * (2 + bool(options)), one_device=True)
        self._train = {}

    def end(self, state, progress, density):
        """Every seed's :func:`jaxprune.irp.round_end` (pruning by ``config.irp_criterion``) to ``density``."""
        data = () if self.criterion == "magnitude" else (self.setup.train_data,)
        return self._end(state, progress, self.setup.test_data, density, *data)

    def train(self, state, progress, first_step: int, num_steps: int, capture_step: int | None):
        """``num_steps`` training steps of every seed's round from ``first_step``."""
        if (num_steps, capture_step) not in self._train:
            self._train[num_steps, capture_step] = parallel.seed_map(functools.partial(
                irp.round_train, model=self.setup.model, tx=self.tx, num_steps=num_steps,
                batch_size=self.config.batch_size, capture_step=capture_step), self.setup.mesh,
                in_axes=(0, 0, None, None))
        return self._train[num_steps, capture_step](state, progress, self.setup.train_data, jnp.int32(first_step))


MIN_SEGMENT_STEPS = 256  # a training call per segment costs ~30 ms of dispatch: keep segments at least this long


def segment_steps(epochs: int, steps_per_epoch: int) -> int:
    """Steps of a round's training segments: k epochs, k the smallest divisor of ``epochs`` with at least
    :data:`MIN_SEGMENT_STEPS` steps (or all of them), so every segment has the same length (one program) and
    long epochs give a progress line each. Where a round is cut does not change what it computes."""
    k = min(d for d in range(1, epochs + 1) if epochs % d == 0 and (d * steps_per_epoch >= MIN_SEGMENT_STEPS
                                                                     or d == epochs))
    return k * steps_per_epoch


def run_rounds(
    config, setup: common.Setup, densities, log=None, record=(), checkpoint_dir: str | None = None,
    seeds: common.Seeds | None = None, writer: metrics_lib.MetricsWriter | None = None,
) -> tuple[irp.IRPState, list[dict], dict]:
    """IRP for all seeds: round r trains at the previous density and prunes to ``densities[r]``.

    With ``checkpoint_dir``, the state and metrics are checkpointed after every round and, if
    ``config.checkpoint_every_steps`` = N > 0, every N training steps within a round (the round's
    :class:`~jaxprune.irp.RoundProgress`: weights, optimizer state, rewind capture, per-step metrics; the data
    order is a function of the step). A rerun resumes from the latest complete checkpoint and produces exactly
    what an uninterrupted run would have. Checkpoint numbers count training steps: r·T + t after t of the T steps
    of round r.
    ``seeds`` (default ``common.init_seeds(setup)``) are the initial weights and data-order keys of the runs,
    e.g. the same weights twice with different data orders.

    A round trains in segments of whole epochs (:func:`segment_steps`; of ``checkpoint_every_steps`` steps if set),
    and a progress line with an ETA is logged after a segment whenever ``common.PROGRESS_SECONDS`` have passed.
    With ``writer``, each round's lines
    (:func:`round_records`) are appended to metrics.jsonl and its scalars written to TensorBoard as the round
    ends; a resumed run first cuts the file back to the rounds its checkpoint holds.

    Returns the final state (seed axis leading, on the mesh), per-round metrics (host numpy), and a dict with the
    :class:`~jaxprune.experiments.common.Seeds` under ``seeds`` and, under ``masks``, the stacked masks reached
    at each density listed in ``record`` (IMP masks for other experiments).
    """
    spe = train.steps_per_epoch(setup.train_data.x.shape[0], config.batch_size)
    check_rewind_step(config, spe)
    programs = RoundPrograms(config, setup, train.optimizer_from_config(config, spe), spe)
    seeds = common.init_seeds(setup) if seeds is None else seeds
    state = programs.init(seeds.params, seeds.batch_stats, seeds.order_keys)
    checkpointer = checkpoint.RoundCheckpointer(checkpoint_dir) if checkpoint_dir else None
    state, history, start, progress = resumed(programs, state, checkpointer, log, checkpoint_dir)
    if writer:
        writer.truncate(sum(len(round_records(r, m)) for r, m in enumerate(history)), step=len(history) + 1)
    steps = programs.num_steps
    loop = Rounds(config, programs, len(densities), config.checkpoint_every_steps or segment_steps(config.epochs, spe),
                  checkpointer, writer, log, common.Eta(len(densities) * steps, done=start[0] * steps + start[1]))
    for r, density in enumerate(densities[start[0]:], start=start[0]):
        t = start[1] if r == start[0] else 0
        progress = train_round(loop, state, programs.begin(state) if t == 0 else progress, r, t, history)
        state = end_round(loop, state, progress, r, density, history)
    recorded = {d: irp.mask_after(state, r + 1) for r, d in enumerate(densities) if d in record}
    return state, history, {"seeds": seeds, "masks": recorded}


def resumed(programs: RoundPrograms, state: irp.IRPState, checkpointer: checkpoint.RoundCheckpointer | None, log,
            checkpoint_dir: str | None) -> tuple[irp.IRPState, list[dict], tuple[int, int], irp.RoundProgress | None]:
    """(state, per-round metrics, (round, step) to go on from, the round's progress if it stopped mid-round) of
    the latest complete checkpoint of ``checkpointer``, or (``state``, [], (0, 0), None) if there is none."""
    if not (checkpointer and checkpointer.latest() is not None):
        return state, [], (0, 0), None
    steps = programs.num_steps
    start = divmod(checkpointer.latest(), steps)
    progress_like = programs.begin(state) if start[1] else None
    state, saved, progress = checkpointer.restore(checkpointer.latest(), state, progress_like)
    history = [{k: np.asarray(v, np.float64) for k, v in m.items()} for m in saved]
    if log:
        log(f"resumed from the checkpoint after round {start[0]}"
            + (f", step {start[1]}/{steps} of round {start[0] + 1}" if start[1] else "") + f" in {checkpoint_dir}")
    return state, history, start, progress


class Rounds(NamedTuple):
    """What every round of one :func:`run_rounds` call shares."""

    config: Any
    programs: RoundPrograms
    num_rounds: int
    every: int  # steps per training segment (``config.checkpoint_every_steps``, or :func:`segment_steps`)
    checkpointer: checkpoint.RoundCheckpointer | None
    writer: metrics_lib.MetricsWriter | None
    log: Callable | None
    eta: common.Eta  # over all rounds' steps


def train_round(loop: Rounds, state: irp.IRPState, progress: irp.RoundProgress, r: int, t: int,
                history: list[dict]) -> irp.RoundProgress:
    """Round ``r``'s training of every seed from step ``t`` to its end, in segments of at most ``loop.every`` steps
    (the rewind point captured in round 0 at ``config.rewind_step``); after each segment but the last a step
    checkpoint (with ``config.checkpoint_every_steps``) and, when due, a progress line."""
    config, steps = loop.config, loop.programs.num_steps
    capture = config.rewind_step if r == 0 and config.rewind_step > 0 else None
    while t < steps:
        n = min(loop.every - t % loop.every, steps - t)
        progress = loop.programs.train(state, progress, t, n, capture)
        t += n
        if loop.checkpointer and config.checkpoint_every_steps and t < steps:
            loop.checkpointer.save(r * steps + t, state, history, progress)
        if loop.log and t < steps and loop.eta.due(n):
            jax.block_until_ready(progress)
            loop.log(f"round {r + 1}/{loop.num_rounds}  step {t}/{steps}  {loop.eta}")
    return progress


def end_round(loop: Rounds, state: irp.IRPState, progress: irp.RoundProgress, r: int, density,
              history: list[dict]) -> irp.IRPState:
    """Round ``r``'s end (:meth:`RoundPrograms.end`: evaluation, pruning to ``density``): its metrics appended to
    ``history`` (and written by ``loop.writer``), then the round checkpoint and a log line; the new state."""
    state, metrics = loop.programs.end(state, progress, density)
    metrics = {k: np.asarray(v, np.float64) for k, v in parallel.to_host(metrics).items()}
    history.append(metrics)
    if loop.writer:  # before the checkpoint: a checkpoint never covers lines that are not on disk
        loop.writer.append(round_records(r, metrics))
        loop.writer.scalars(r + 1, {k: metrics[k] if k.startswith("test") or k == "density" else metrics[k][:, -1]
                                    for k in ROUND_SCALARS})
    if loop.checkpointer:
        loop.checkpointer.save((r + 1) * loop.programs.num_steps, state, history)
    if loop.log:
        loop.log(f"round {r + 1}/{loop.num_rounds}  density {float(np.mean(metrics['density'])):.4f}  "
                 f"test acc {common.mean_std(metrics['test_accuracy'])}  "
                 f"train acc {common.mean_std(metrics['train_accuracy'][:, -1])}")
    return state


def survival_arrays(state: irp.IRPState, params_like) -> dict[str, np.ndarray]:
    """Prunable parameters' survival counts, '/'-joined path → [num_seeds, *shape] int32."""
    one_seed = jax.tree.map(lambda x: x[0], params_like)
    return {
        name: np.asarray(counts)
        for name, counts in zip(masks.prunable_names(one_seed), masks.prunable_leaves(state.survival, one_seed))
    }


ROUND_SCALARS = ("density", "test_accuracy", "test_loss", "train_accuracy", "train_loss")  # TensorBoard, per round


def round_records(r: int, m: dict) -> list[dict]:
    """metrics.jsonl lines of round r: per seed, one per epoch, then the round's summary."""
    records = []
    for s in range(len(m["test_accuracy"])):
        for e in range(m["train_loss"].shape[1]):
            records.append({"round": r, "epoch": e, "seed": s, "train_loss": m["train_loss"][s, e],
                            "train_accuracy": m["train_accuracy"][s, e]})
        records.append({"round": r, "seed": s, "density": m["density"][s],
                        "test_accuracy": m["test_accuracy"][s], "test_loss": m["test_loss"][s],
                        "train_accuracy": m["train_accuracy"][s, -1], "train_loss": m["train_loss"][s, -1]})
    return records


def metric_records(history: list[dict]) -> list[dict]:
    """metrics.jsonl lines of every round (:func:`round_records`)."""
    return [record for r, m in enumerate(history) for record in round_records(r, m)]


def failed_seeds(state: irp.IRPState) -> list[dict]:
    """Seeds whose loss went non-finite, with the round and step where it first did."""
    rounds, steps = np.asarray(state.failed_round), np.asarray(state.failed_step)
    return [{"seed": s, "round": int(rounds[s]), "step": int(steps[s])} for s in np.flatnonzero(rounds >= 0)]


def write_outputs(config, workdir: str, survival: dict, density: list[float], test_accuracy: np.ndarray,
                  flat_survival: np.ndarray) -> None:
    """``survival.npz`` (``survival``: every seed's) and the figures, of the seeds in the means: their
    ``test_accuracy`` [seed, round] against the rounds' ``density`` and their ``flat_survival`` counts."""
    wd.save_npz(os.path.join(workdir, "survival.npz"), survival)
    plotting.lines_vs_density(
        os.path.join(workdir, "accuracy_vs_density.png"),
        {f"IRP ({len(test_accuracy)} seeds)": (density, test_accuracy)},
        ylabel="test accuracy", title=f"IRP: {config.model} on {config.dataset} (mean ± sd over seeds)",
    )
    plotting.histogram(
        os.path.join(workdir, "survival_histogram.png"), {"all seeds": flat_survival},
        bins=np.arange(config.rounds + 2) - 0.5, xlabel="survival count (rounds survived)",
        title=f"Survival counts after {config.rounds} rounds",
    )


def run(config, workdir: str) -> dict:
    """The ``irp`` experiment end to end; returns the results written to ``results.json``."""
    log = common.Progress("irp")
    setup = common.setup(config)
    log(f"{config.num_seeds} seeds x {config.rounds} rounds, model {config.model}, dataset {config.dataset} "
        f"({len(setup.dataset.y_train)} train / {len(setup.dataset.y_test)} test), {config.epochs} epochs/round")
    seeds = common.init_seeds(setup)
    log("prunable parameters:\n" + parameter_overview.table(jax.tree.map(lambda p: p[0], seeds.params)))
    with metrics_lib.MetricsWriter(workdir, config.num_seeds) as writer:
        state, history, _ = run_rounds(config, setup, irp.schedule(config.prune_fraction, config.rounds), log,
                                       checkpoint_dir=os.path.join(workdir, wd.CHECKPOINTS), seeds=seeds,
                                       writer=writer)
    state = parallel.to_host(state)
    params_one = jax.tree.map(lambda p: p[0], state.rewind_params)
    log("prunable parameters after the last round (density: mean over seeds):\n"
        + parameter_overview.table(params_one, state.mask))
    failed = failed_seeds(state)
    ok = np.ones(config.num_seeds, bool)
    ok[[f["seed"] for f in failed]] = False
    test_accuracy = np.stack([m["test_accuracy"] for m in history], axis=1)  # [seed, round]
    density = [float(irp.density_after(r, config.prune_fraction)) for r in range(config.rounds)]
    survival = survival_arrays(state, state.rewind_params)
    flat_survival = np.concatenate([v.reshape(config.num_seeds, -1) for v in survival.values()], axis=1)
    if not ok.any():
        raise AllSeedsFailed(f"all {config.num_seeds} seeds had a non-finite loss: {failed}")

    results = {
        "experiment": "irp",
        "num_seeds": config.num_seeds,
        "rounds": config.rounds,
        "prune_fraction": config.prune_fraction,
        "density_per_round": density,
        "measured_density_per_round": np.stack([m["density"] for m in history], axis=1)[0],
        "test_accuracy": test_accuracy,
        "mean_test_accuracy": np.mean(test_accuracy[ok], axis=0),
        "survival_ccc": stats.mean_pairwise_ccc(flat_survival[ok]),
        "failed_seeds": failed,
        "num_seeds_in_means": int(ok.sum()),
    }
    if parallel.is_primary():
        write_outputs(config, workdir, survival, density, test_accuracy[ok], flat_survival[ok])
    log(f"final density {irp.density_after(config.rounds, config.prune_fraction):.4f}; survival CCC between seeds "
        f"{results['survival_ccc']:.4f}; outputs in {workdir}")
    return results
